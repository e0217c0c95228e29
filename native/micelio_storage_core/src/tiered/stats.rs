//! The tiers' counters.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{TieredStore, Value};

impl<V: Value> TieredStore<V> {
    /// Counters per tier: `(tier, [(name, value)])`.
    pub fn stats(&self) -> Vec<(&'static str, Vec<(&'static str, u64)>)> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Vec::new();
        if let Some(m) = &self.memory {
            let st = m.stats();
            out.push((
                "memory",
                vec![
                    ("hits", st.hits),
                    ("misses", st.misses),
                    ("evictions", st.evictions),
                    ("bytes", st.bytes),
                    ("entries", st.entries),
                    ("max_bytes", m.capacity() as u64),
                ],
            ));
        }
        if let Some(d) = &self.disk {
            out.push((
                "disk",
                vec![
                    ("hits", load(&d.counters.hits)),
                    ("misses", load(&d.counters.misses)),
                    ("evictions", load(&d.counters.evictions)),
                    ("bytes", d.bytes()),
                    ("entries", d.entries()),
                    ("max_bytes", d.capacity()),
                    ("corrupt", load(&d.corrupt)),
                ],
            ));
        }
        if let Some(cdn) = &self.cdn {
            out.push((
                "cdn",
                vec![
                    ("hits", load(&cdn.counters.hits)),
                    ("misses", load(&cdn.counters.misses)),
                    ("errors", load(&cdn.errors)),
                ],
            ));
        }
        out.push((
            "origin",
            vec![
                ("fetches", load(&self.origin_fetches)),
                ("revalidations", load(&self.revalidations)),
                ("revalidated_unchanged", load(&self.unchanged)),
                ("merged_waits", load(&self.merged)),
            ],
        ));
        out
    }

    /// Bytes the RAM tier charges now, ghosts included (for budget tests).
    pub fn memory_charged_bytes(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.charged_bytes() as u64)
    }
}

//! Where the engine's log events go: to one Elixir process (the
//! `Micelio.Storage.Log` server), which hands them to `Logger`.

use std::sync::Mutex;

use micelio_storage_core::observe::{self, Level, LogEvent};
use rustler::env::OwnedEnv;
use rustler::{Atom, Encoder, LocalPid};

mod atoms {
    rustler::atoms! { micelio_storage_log, debug, info, warning }
}

static SINK: Mutex<Option<LocalPid>> = Mutex::new(None);

fn send(event: LogEvent) {
    let Some(pid) = *SINK.lock().unwrap_or_else(|p| p.into_inner()) else {
        return;
    };
    // Events come from the runtime's threads, never a scheduler's: sending
    // from a scheduler thread would panic, so such an event is dropped.
    if std::thread::current()
        .name()
        .is_none_or(|n| !n.starts_with("micelio-storage-io") && !n.starts_with("tokio"))
    {
        return;
    }
    let mut env = OwnedEnv::new();
    let _ = env.send_and_clear(&pid, |env| {
        let level = match event.level {
            Level::Debug => atoms::debug(),
            Level::Info => atoms::info(),
            Level::Warning => atoms::warning(),
        };
        let metadata: Vec<(Atom, &str)> = event
            .metadata
            .iter()
            .map(|(k, v)| (Atom::from_str(env, k).expect("an atom"), v.as_str()))
            .collect();
        (
            atoms::micelio_storage_log(),
            level,
            event.message.as_str(),
            metadata,
        )
            .encode(env)
    });
}

/// Sends the engine's log events to `pid` from now on.
#[rustler::nif]
fn set_log_sink(pid: LocalPid) -> Atom {
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
    observe::set_log_hook(send);
    rustler::types::atom::ok()
}

// Uploaders for Phoenix LiveView external uploads, from micelio_storage.
//
//   import {MicelioStorageUploaders} from "micelio_storage/priv/static/micelio_storage_uploaders.js"
//   let liveSocket = new LiveSocket("/live", Socket, {uploaders: MicelioStorageUploaders, ...})
//
// Loaded by a script tag (<script type="module" src=".../micelio_storage_uploaders.js">), it
// also sets the global `MicelioStorageUploaders`.
//
// `Micelio.Storage.LiveView.presign_upload/3` answers each entry's preflight with the `meta`
// these read, and names the uploader in `meta.uploader`:
//   - "MicelioS3Post": a form POST of `meta.fields`, then the file (an S3 POST policy, which
//     S3 enforces: size range, content type, key);
//   - "MicelioS3Put": a PUT of the file to the presigned `meta.url`, with `meta.headers`
//     (the signed Content-Type), for providers without POST uploads (Cloudflare R2).
// Both report progress to the LiveView, and abort the request when the entry is cancelled
// (cancel_upload on the server, or the view going away).

function track(entry, xhr, onViewError) {
  onViewError(() => xhr.abort())
  // LiveView marks a cancelled entry; the request stops with it.
  let watch = setInterval(() => {
    if (entry.isCancelled()) { xhr.abort() }
  }, 100)
  let stop = () => clearInterval(watch)
  xhr.addEventListener("loadend", stop)
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) {
      let percent = Math.round((event.loaded / event.total) * 100)
      // 100 is reported when the store has answered, not when the last byte left.
      if (percent < 100) { entry.progress(percent) }
    }
  })
  xhr.onload = () => {
    if (xhr.status >= 200 && xhr.status < 300) {
      entry.progress(100)
    } else {
      entry.error(`upload refused (HTTP ${xhr.status})`)
    }
  }
  xhr.onerror = () => entry.error("network error")
}

function MicelioS3Post(entries, onViewError) {
  entries.forEach((entry) => {
    let {url, fields} = entry.meta
    let form = new FormData()
    Object.entries(fields).forEach(([name, value]) => form.append(name, value))
    // S3 reads the fields before the file: the file goes last.
    form.append("file", entry.file)
    let xhr = new XMLHttpRequest()
    track(entry, xhr, onViewError)
    xhr.open("POST", url, true)
    xhr.send(form)
  })
}

function MicelioS3Put(entries, onViewError) {
  entries.forEach((entry) => {
    let {url, headers} = entry.meta
    let xhr = new XMLHttpRequest()
    track(entry, xhr, onViewError)
    xhr.open("PUT", url, true)
    Object.entries(headers || {}).forEach(([name, value]) => xhr.setRequestHeader(name, value))
    xhr.send(entry.file)
  })
}

export const MicelioStorageUploaders = {MicelioS3Post, MicelioS3Put}
export default MicelioStorageUploaders

if (typeof globalThis !== "undefined") {
  globalThis.MicelioStorageUploaders = MicelioStorageUploaders
}

// Thin client of the segloop HTTP API (docs/service.md). Every error becomes an Error whose
// message is the API's own "detail" text, never a stack trace.

const KEY_STORAGE = 'segloop.apiKey';

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || '';
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function headers(extra = {}) {
  const h = { ...extra };
  const k = apiKey();
  if (k) h['X-API-Key'] = k;
  return h;
}

/** A URL with ?api_key= added when a key is set (for EventSource, which cannot send headers). */
export function withKey(url) {
  const k = apiKey();
  if (!k) return url;
  return url + (url.includes('?') ? '&' : '?') + 'api_key=' + encodeURIComponent(k);
}

async function errorText(resp) {
  let text = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (typeof body.detail === 'string') text = body.detail;
    else if (Array.isArray(body.detail)) {
      text = body.detail.map((d) => `${(d.loc || []).slice(1).join('.')}: ${d.msg}`).join('; ');
    }
  } catch (e) { /* not JSON */ }
  const err = new Error(text);
  err.status = resp.status;
  return err;
}

/** fetch with the API key; throws Error(detail) on a non-2xx answer. */
export async function request(method, url, { json, body, headers: extra } = {}) {
  const init = { method, headers: headers(extra) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers['Content-Type'] = 'application/json';
  } else if (body !== undefined) {
    init.body = body;
  }
  const resp = await fetch(url, init);
  if (!resp.ok) throw await errorText(resp);
  return resp;
}

export async function getJSON(url) {
  return (await request('GET', url)).json();
}

export async function postJSON(url, json) {
  return (await request('POST', url, { json: json ?? {} })).json();
}

export const jobs = '/api/v1/jobs';
export const jobUrl = (id, tail = '') => `${jobs}/${id}${tail}`;

/** Upload a file (multipart field "file"); onProgress(fraction) while bytes are sent. */
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', jobs);
    const k = apiKey();
    if (k) xhr.setRequestHeader('X-API-Key', k);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.upload.onload = () => performance.mark('segloop:upload-sent'); // benchmarks/viewer_first_image.py
    xhr.onerror = () => reject(new Error('upload failed: the server could not be reached'));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        let msg = `${xhr.status} ${xhr.statusText}`;
        if (body && typeof body.detail === 'string') msg = body.detail;
        reject(new Error(msg));
      }
    };
    const fd = new FormData();
    fd.append('file', file, file.name);
    xhr.send(fd);
  });
}

/** Download a URL (with the key) as a file named from Content-Disposition or `fallback`. */
export async function download(url, fallback) {
  const resp = await request('GET', url);
  const blob = await resp.blob();
  let name = fallback;
  const cd = resp.headers.get('Content-Disposition') || '';
  const m = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(cd);
  if (m) name = decodeURIComponent(m[1]);
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  return name;
}

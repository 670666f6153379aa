// The native API of `kolors serve` (/api/v1, docs/native-api contract): JSON calls, uploads, images as blob
// URLs and job events, all with the API key when the server has keys. Paths are relative to the page, so the UI
// also works behind a reverse proxy that serves it under a sub-path.

import { readEvents } from "./sse.js";

const BASE = "api/v1/";
const KEY_STORAGE = "kolors-api-key"; // sessionStorage: kept for this tab's session only

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const error = body?.error || {};
    super(error.message || body?.detail || `HTTP ${status}`);
    this.status = status;
    this.param = error.param || null;
    this.code = error.code || null;
    this.retryAfter = retryAfter;
  }
}

export class Api {
  /** `askKey()` is called on a 401 and resolves once the user entered a key (then the call is retried). */
  constructor({ askKey }) {
    this.askKey = askKey;
    this.blobUrls = new Map();
  }

  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  }

  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  url(path) {
    return path.startsWith("/") ? path.slice(1) : BASE + path;
  }

  /** fetch() with the key; a 401 asks for a key and retries; other errors become ApiError. */
  async fetch(path, options = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = new Headers(options.headers || {});
      if (this.key) headers.set("Authorization", `Bearer ${this.key}`);
      const response = await fetch(this.url(path), { ...options, headers });
      if (response.status === 401 && attempt < 3 && this.askKey) {
        await this.askKey({ rejected: Boolean(this.key) });
        continue;
      }
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          /* not JSON: the status says it */
        }
        throw new ApiError(response.status, body, Number(response.headers.get("Retry-After")) || null);
      }
      return response;
    }
  }

  async get(path, options) {
    return (await this.fetch(path, options)).json();
  }

  async post(path, body, options = {}) {
    const response = await this.fetch(path, {
      ...options,
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return response.json();
  }

  info() {
    return this.get("info");
  }

  tokenize(text, signal) {
    return this.post("tokenize", { text }, { signal });
  }

  /** Store an image (File or Blob) on the server; resolves to {id, width, height, name}. */
  async upload(file, name = file.name || "image.png") {
    const form = new FormData();
    form.append("file", file, name);
    return (await this.fetch("uploads", { method: "POST", body: form })).json();
  }

  /** The control map the server derives from an image reference, as a Blob (PNG). */
  async controlMap(body, signal) {
    const response = await this.fetch("control-maps", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
    return response.blob();
  }

  /** The request stored in a PNG made by kolors or AUTOMATIC1111: {request, source}. */
  async parameters(file) {
    const form = new FormData();
    form.append("file", file, file.name || "image.png");
    return (await this.fetch("parameters", { method: "POST", body: form })).json();
  }

  submit(request) {
    return this.post("jobs", request);
  }

  jobs({ status, limit = 50, before } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set("status", status);
    if (before) query.set("before", before);
    return this.get(`jobs?${query}`);
  }

  job(id) {
    return this.get(`jobs/${encodeURIComponent(id)}`);
  }

  cancel(id) {
    return this.post(`jobs/${encodeURIComponent(id)}/cancel`, {});
  }

  /** Follow a job's events until its stream ends: `onEvent(name, data)`. */
  async follow(id, onEvent, signal) {
    const response = await this.fetch(`jobs/${encodeURIComponent(id)}/events`, {
      headers: { Accept: "text/event-stream" },
      signal,
    });
    await readEvents(response, onEvent);
  }

  /** A server image (a job result or an upload) as a blob: URL, fetched once with the key. */
  async imageUrl(path) {
    if (!this.blobUrls.has(path)) {
      const pending = this.fetch(path).then(async (response) => URL.createObjectURL(await response.blob()));
      pending.catch(() => this.blobUrls.delete(path));
      this.blobUrls.set(path, pending);
    }
    return this.blobUrls.get(path);
  }

  async imageBlob(path) {
    return (await this.fetch(path)).blob();
  }
}

/** The URL of an image reference (`upload:<id>` or `job:<id>/<i>`), or null for anything else. */
export function referenceUrl(reference) {
  const upload = /^upload:([\w.-]+)$/.exec(reference || "");
  if (upload) return `/api/v1/uploads/${upload[1]}`;
  const job = /^job:([\w.-]+)\/(\d+)$/.exec(reference || "");
  if (job) return `/api/v1/jobs/${job[1]}/images/${job[2]}`;
  return null;
}

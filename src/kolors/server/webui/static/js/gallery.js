// The gallery of finished jobs (this session's and earlier ones: GET /api/v1/jobs, newest first, older pages on
// demand) and the viewer of one image: its full parameters, copyable as the A1111 text and the CLI command,
// reuse, send to another task, download the PNG with its metadata.

import { $, copyText, download, instantiate, role } from "./dom.js";

const PAGE = 50;
const INPUT_KEYS = ["init_image", "mask", "controls", "ip_adapter", "face_id"];
// Parameters shown first, in this order; the others follow as stored.
const PARAM_ORDER = ["prompt", "negative_prompt", "task", "width", "height", "steps", "guidance", "scheduler", "seed",
  "strength", "model", "mode"];

export class Gallery {
  constructor({ api, i18n, onOpen }) {
    this.api = api;
    this.i18n = i18n;
    this.onOpen = onOpen;
    this.list = document.getElementById("gallery-list");
    this.more = document.getElementById("gallery-more");
    this.shown = new Set();
    this.oldest = null;
    this.more.addEventListener("click", () => this.load(this.oldest));
  }

  /** Add a page of finished jobs, newest first (`before`: the id after which to continue). */
  async load(before = null) {
    const { jobs } = await this.api.jobs({ limit: PAGE, before });
    for (const job of jobs) this.add(job, { atTop: false });
    if (jobs.length) this.oldest = jobs[jobs.length - 1].id;
    this.more.hidden = jobs.length < PAGE;
    this.updateEmpty();
  }

  /** Show a job's images (new results go on top). */
  add(job, { atTop = true } = {}) {
    if (job.status !== "succeeded") return;
    const items = (job.images || []).map((image, index) => this.item(job, index)).filter(Boolean);
    if (atTop) this.list.prepend(...items);
    else this.list.append(...items);
    this.updateEmpty();
  }

  item(job, index) {
    const key = `${job.id}/${index}`;
    if (this.shown.has(key)) return null;
    this.shown.add(key);
    const item = instantiate("tpl-gallery-item", this.i18n);
    item.dataset.image = key;
    const prompt = job.request?.prompt ?? "";
    role(item, "caption").textContent = prompt;
    const img = role(item, "image");
    this.i18n.setAttr(img, "alt", "gallery.image_alt", { index: index + 1, prompt });
    this.api.imageUrl(job.images[index].url).then((url) => { img.src = url; }, () => {});
    role(item, "open").addEventListener("click", () => this.onOpen(job, index));
    return item;
  }

  updateEmpty() {
    document.getElementById("gallery-empty").hidden = this.shown.size > 0;
  }
}

export class Viewer {
  /** `onReuse(job, index)` loads its parameters into the form; `onSend(job, index, task)` uses it as input. */
  constructor({ api, i18n, toasts, onReuse, onSend }) {
    this.api = api;
    this.i18n = i18n;
    this.toasts = toasts;
    this.section = $("viewer");
    this.image = $("viewer-image");
    this.params = $("viewer-params");
    this.infotext = $("viewer-infotext");
    this.command = $("viewer-command");
    const current = () => [this.job, this.index];
    $("viewer-reuse").addEventListener("click", () => onReuse(...current()));
    $("viewer-to-i2i").addEventListener("click", () => onSend(...current(), "image-to-image"));
    $("viewer-to-inpaint").addEventListener("click", () => onSend(...current(), "inpaint"));
    $("viewer-to-outpaint").addEventListener("click", () => onSend(...current(), "outpaint"));
    $("viewer-download").addEventListener("click", () => this.download());
    $("viewer-copy-infotext").addEventListener("click", () => this.copy(this.infotext.textContent));
    $("viewer-copy-command").addEventListener("click", () => this.copy(this.command.textContent));
  }

  async show(job, index) {
    this.job = job;
    this.index = index;
    const image = job.images[index];
    this.section.hidden = false;
    this.section.dataset.image = `${job.id}/${index}`;
    this.image.src = await this.api.imageUrl(image.url);
    // The image inputs as the request named them (uploads, results), not as files on the server.
    const inputs = Object.fromEntries(INPUT_KEYS.filter((k) => job.request?.[k] != null).map((k) => [k, job.request[k]]));
    this.showParameters({ ...(image.parameters || job.request || {}), ...inputs, seed: image.seed });
    this.infotext.textContent = image.infotext || "";
    this.command.textContent = image.command || "";
  }

  showParameters(params) {
    const keys = [...PARAM_ORDER.filter((k) => k in params), ...Object.keys(params).filter((k) => !PARAM_ORDER.includes(k))];
    const rows = [];
    for (const key of keys) {
      const value = params[key];
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) continue;
      const term = document.createElement("dt");
      if (this.i18n.has(`param.${key}`)) this.i18n.set(term, `param.${key}`);
      else {
        term.textContent = key;
        term.dataset.content = "";
      }
      const detail = document.createElement("dd");
      detail.dataset.content = "";
      detail.dataset.param = key;
      detail.textContent = readable(value);
      rows.push(term, detail);
    }
    this.params.replaceChildren(...rows);
  }

  async copy(text) {
    try {
      await copyText(text);
      this.toasts.show("toast.copied", { timeout: 3000 });
    } catch (error) {
      this.toasts.error("error.copy", error);
    }
  }

  async download() {
    try {
      const blob = await this.api.imageBlob(this.job.images[this.index].url);
      download(blob, `kolors-${this.job.id}-${this.index}.png`);
    } catch (error) {
      this.toasts.error("error.download", error);
    }
  }
}


/** A parameter value as text: lists one item a line, objects as "key value, key value" (a control, a LoRA). */
function readable(value) {
  if (Array.isArray(value)) return value.map(readable).join(value.some((v) => typeof v === "object") ? "\n" : ", ");
  if (value !== null && typeof value === "object") {
    return Object.entries(value)
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k} ${readable(v)}`)
      .join(", ");
  }
  return String(value);
}

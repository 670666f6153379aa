// One image input of the request (the input image, a control image, an IP-Adapter or face image): a file chosen
// or dropped (uploaded at once, referred to as `upload:<id>`), or a previous result (`job:<id>/<i>`).

import { referenceUrl } from "./api.js";
import { role } from "./dom.js";

export class ImageSource {
  /** `root` holds a file input (data-role=file or the first file input) and a data-role=name span. */
  constructor(root, { api, i18n, toasts, onChange = () => {} }) {
    this.api = api;
    this.i18n = i18n;
    this.toasts = toasts;
    this.onChange = onChange;
    this.input = role(root, "file") || root.querySelector('input[type="file"]');
    this.name = role(root, "name");
    this.reference = null;
    this.url = null; // a blob: URL showing the image
    this.size = null; // [width, height]
    this.input.addEventListener("change", () => {
      if (this.input.files[0]) this.useFile(this.input.files[0]);
      this.input.value = "";
    });
    root.addEventListener("dragover", (event) => event.preventDefault());
    root.addEventListener("drop", (event) => {
      const file = event.dataTransfer.files[0];
      if (!file) return;
      event.preventDefault();
      event.stopPropagation();
      this.useFile(file);
    });
  }

  /** Upload `file` and use it. */
  async useFile(file) {
    try {
      this.i18n.set(this.name, "image.uploading");
      const stored = await this.api.upload(file);
      this.set(`upload:${stored.id}`, URL.createObjectURL(file), [stored.width, stored.height], stored.name);
    } catch (error) {
      this.clear();
      this.toasts.error("error.upload", error);
    }
  }

  /** Use an image the server has (`upload:<id>` or `job:<id>/<i>`); false for anything else. */
  async useReference(reference, label) {
    const path = referenceUrl(reference);
    if (!path) return false;
    const url = await this.api.imageUrl(path);
    const size = await imageSize(url);
    this.set(reference, url, size, label ?? reference);
    return true;
  }

  set(reference, url, size, label) {
    this.reference = reference;
    this.url = url;
    this.size = size;
    delete this.name.dataset.i18n;
    this.name.dataset.content = "";
    this.name.textContent = label;
    this.onChange(this);
  }

  clear() {
    this.reference = null;
    this.url = null;
    this.size = null;
    this.name.textContent = "";
    delete this.name.dataset.i18n;
    this.onChange(this);
  }
}

/** The pixel size of the image at `url`. */
export async function imageSize(url) {
  const image = await loadImage(url);
  return [image.naturalWidth, image.naturalHeight];
}

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot show the image ${url}`));
    image.src = url;
  });
}

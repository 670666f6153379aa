// The tasks that start from an image: image to image (strength), inpainting (a mask painted over the image) and
// outpainting (the canvas extended per side, previewed around the image).

import { referenceUrl } from "./api.js";
import { $, numberOf } from "./dom.js";
import { ImageSource, loadImage } from "./image_source.js";
import { MaskPainter } from "./mask_painter.js";

export const TEXT_TO_IMAGE = "text-to-image";
const CANVAS_MULTIPLE = 8; // the server grows outpainting canvases to multiples of 8 (right and bottom)

export class ImageTasks {
  constructor({ api, i18n, toasts, onTask }) {
    this.api = api;
    this.i18n = i18n;
    this.toasts = toasts;
    this.onTask = onTask;
    this.panel = $("image-panel");
    this.stage = $("stage");
    this.stageImage = $("stage-image");
    this.strength = $("strength");
    this.strengthValue = $("strength-value");
    this.feather = $("feather");
    this.extend = ["left", "top", "right", "bottom"].map((side) => $(`extend-${side}`));
    this.painter = new MaskPainter($("mask-canvas"));
    this.uploadedMask = null; // {version, reference}: the painted mask as last uploaded
    this.strengthTouched = false;
    this.source = new ImageSource($("init-source"), { api, i18n, toasts, onChange: () => this.imageChanged() });
    this.panel.addEventListener("dragover", (event) => event.preventDefault());
    this.panel.addEventListener("drop", (event) => {
      if (!event.dataTransfer.files[0]) return;
      event.preventDefault();
      event.stopPropagation();
      this.source.useFile(event.dataTransfer.files[0]);
    });
    for (const radio of document.querySelectorAll('input[name="task"]')) {
      radio.addEventListener("change", () => this.taskChanged());
    }
    this.strength.addEventListener("input", () => { this.strengthTouched = true; this.showStrength(); });
    $("strength-reset").addEventListener("click", () => { this.strengthTouched = false; this.showStrength(); });
    const brush = $("brush-size");
    brush.addEventListener("input", () => { this.painter.brush = Number(brush.value); this.showBrush(); });
    for (const radio of document.querySelectorAll('input[name="brush-mode"]')) {
      radio.addEventListener("change", () => { this.painter.mode = radio.value; });
    }
    $("mask-clear").addEventListener("click", () => this.painter.clear());
    $("mask-invert").addEventListener("click", () => this.painter.invert());
    for (const input of this.extend) input.addEventListener("input", () => this.layout());
  }

  setup(info) {
    this.defaultStrength = info.defaults?.img2img_strength ?? 0.3;
    this.taskChanged();
  }

  get task() {
    return document.querySelector('input[name="task"]:checked').value;
  }

  setTask(task) {
    const radio = document.querySelector(`input[name="task"][value="${task}"]`);
    if (!radio) return;
    radio.checked = true;
    this.taskChanged();
  }

  taskChanged() {
    const task = this.task;
    this.panel.hidden = task === TEXT_TO_IMAGE;
    $("mask-tools").hidden = task !== "inpaint";
    $("mask-canvas").hidden = task !== "inpaint";
    $("extend-tools").hidden = task !== "outpaint";
    $("feather-row").hidden = task !== "inpaint" && task !== "outpaint";
    this.showStrength();
    this.layout();
    this.onTask(task);
  }

  /** Use a result or upload (`job:<id>/<i>`, `upload:<id>`) as the input image of `task`. */
  async useResult(reference, task) {
    this.setTask(task);
    await this.source.useReference(reference, this.i18n.t("image.from_result"));
    this.panel.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  imageChanged() {
    const size = this.source.size;
    document.getElementById("init-empty").hidden = Boolean(size);
    this.stage.hidden = !size;
    if (!size) return;
    this.stageImage.src = this.source.url;
    const [w, h] = size;
    if (this.painter.canvas.width !== w || this.painter.canvas.height !== h) this.painter.reset(w, h);
    else this.painter.clear();
    const brush = document.getElementById("brush-size");
    brush.max = Math.max(8, Math.round(Math.max(w, h) / 2));
    brush.value = Math.max(4, Math.round(Math.max(w, h) / 10));
    this.painter.brush = Number(brush.value);
    this.showBrush();
    this.layout();
  }

  showBrush() {
    document.getElementById("brush-size-value").textContent = String(this.painter.brush);
  }

  showStrength() {
    if (!this.strengthTouched) {
      this.strength.value = this.task === "image-to-image" ? this.defaultStrength : 1;
    }
    if (this.strengthTouched || this.task === "image-to-image") {
      delete this.strengthValue.dataset.i18n;
      this.strengthValue.textContent = Number(this.strength.value).toFixed(2);
    } else {
      this.i18n.set(this.strengthValue, "strength.task_default");
    }
  }

  /** The extension per side (left, top, right, bottom) and the grown canvas size, as the server computes it. */
  grownCanvas() {
    const [left, top, right, bottom] = this.extend.map((input) => Math.max(0, numberOf(input) || 0));
    const [w, h] = this.source.size || [0, 0];
    const width = Math.ceil((w + left + right) / CANVAS_MULTIPLE) * CANVAS_MULTIPLE;
    const height = Math.ceil((h + top + bottom) / CANVAS_MULTIPLE) * CANVAS_MULTIPLE;
    return { sides: [left, top, right, bottom], width, height };
  }

  /** Place the image on the stage: alone, or (outpainting) inside the grown canvas. */
  layout() {
    const size = this.source.size;
    const image = this.stageImage;
    const canvas = this.painter.canvas;
    const outpaint = this.task === "outpaint" && size;
    this.stage.classList.toggle("outpaint", Boolean(outpaint));
    if (!outpaint) {
      this.stage.style.aspectRatio = size ? `${size[0]} / ${size[1]}` : "";
      for (const element of [image, canvas]) element.style.cssText = "";
      return;
    }
    const { sides, width, height } = this.grownCanvas();
    this.stage.style.aspectRatio = `${width} / ${height}`;
    Object.assign(image.style, {
      left: `${(100 * sides[0]) / width}%`, top: `${(100 * sides[1]) / height}%`,
      width: `${(100 * size[0]) / width}%`, height: `${(100 * size[1]) / height}%`,
    });
    this.i18n.set(document.getElementById("extend-size"), "extend.size", { width, height });
  }

  /** Whether the inputs of `task` are complete; says what is missing when not. */
  check(task) {
    if (task === TEXT_TO_IMAGE) return true;
    if (!this.source.reference) {
      this.toasts.show("image.required", { error: true });
      return false;
    }
    if (task === "inpaint" && this.painter.isEmpty()) {
      this.toasts.show("mask.required", { error: true });
      return false;
    }
    if (task === "outpaint" && !this.grownCanvas().sides.some(Boolean)) {
      this.toasts.show("extend.required", { error: true });
      return false;
    }
    return true;
  }

  async contribute(request, task) {
    request.task = task;
    if (task === TEXT_TO_IMAGE) return;
    request.init_image = this.source.reference;
    if (this.strengthTouched || task === "image-to-image") request.strength = Number(this.strength.value);
    if (task === "inpaint") request.mask = await this.maskReference();
    if (task === "outpaint") request.extend = this.grownCanvas().sides;
    if ((task === "inpaint" || task === "outpaint") && numberOf(this.feather) !== null) {
      request.feather = numberOf(this.feather);
    }
  }

  /** The painted mask on the server (uploaded again only when it changed). */
  async maskReference() {
    if (this.uploadedMask?.version !== this.painter.version) {
      const version = this.painter.version;
      const stored = await this.api.upload(await this.painter.toBlob(), "mask.png");
      this.uploadedMask = { version, reference: `upload:${stored.id}` };
    }
    return this.uploadedMask.reference;
  }

  /** Show `request`'s task and image inputs; returns the names of image fields that could not be used. */
  async apply(request) {
    const task = request.task || TEXT_TO_IMAGE;
    this.setTask(task);
    const lost = [];
    if (task === TEXT_TO_IMAGE) return lost;
    if (!(await this.source.useReference(request.init_image, this.i18n.t("image.from_request")))) {
      lost.push("init_image");
      this.source.clear();
    }
    this.strengthTouched = request.strength != null;
    if (this.strengthTouched) this.strength.value = request.strength;
    this.showStrength();
    this.feather.value = request.feather ?? "";
    if (request.extend) this.extend.forEach((input, i) => { input.value = request.extend[i]; });
    this.layout();
    if (task === "inpaint" && request.mask) {
      const path = referenceUrl(request.mask);
      if (path && this.source.size) this.painter.load(await loadImage(await this.api.imageUrl(path)));
      else lost.push("mask");
    }
    return lost;
  }
}

// ControlNet inputs: one card per control (type, ControlNet model, image, detect or ready map, canny thresholds,
// scale, start, end), each showing the map the ControlNet will see (POST /api/v1/control-maps) before generating.

import { debounce, fillModels, instantiate, numberOf, role } from "./dom.js";
import { ImageSource } from "./image_source.js";

const MAX_CONTROLS = 8;
const MAP_DELAY_MS = 400;

export class Controls {
  constructor(deps) {
    this.deps = deps;
    this.list = document.getElementById("controls-list");
    this.addButton = document.getElementById("control-add");
    this.cards = [];
    this.addButton.addEventListener("click", () => this.add().focus());
  }

  setup(info) {
    this.types = info.control_types || ["canny", "depth", "pose"];
    this.models = info.controlnets || {};
    this.defaults = info.default_controlnets || {};
  }

  add() {
    const card = new ControlCard(this, instantiate("tpl-control", this.deps.i18n));
    this.cards.push(card);
    this.list.append(card.root);
    this.renumber();
    return card;
  }

  remove(card) {
    this.cards = this.cards.filter((c) => c !== card);
    card.root.remove();
    this.renumber();
    this.addButton.focus();
  }

  renumber() {
    this.cards.forEach((card, i) => { role(card.root, "index").textContent = String(i + 1); });
    this.addButton.disabled = this.cards.length >= MAX_CONTROLS;
  }

  check() {
    const missing = this.cards.find((card) => !card.source.reference);
    if (missing) {
      this.deps.toasts.show("control.image_required", { error: true });
      missing.focus();
      return false;
    }
    return true;
  }

  contribute(request) {
    request.controls = this.cards.map((card) => card.toRequest());
  }

  async apply(request) {
    for (const card of [...this.cards]) this.remove(card);
    const lost = [];
    for (const control of request.controls || []) {
      const card = this.add();
      if (!(await card.apply(control))) lost.push("controls");
    }
    if (this.cards.length) document.getElementById("controls-panel").open = true;
    return lost;
  }
}

class ControlCard {
  constructor(owner, root) {
    this.owner = owner;
    this.root = root;
    const { api, i18n, toasts } = owner.deps;
    this.api = api;
    this.i18n = i18n;
    this.type = role(root, "type");
    this.model = role(root, "model");
    this.detect = role(root, "detect");
    this.low = role(root, "low");
    this.high = role(root, "high");
    this.scale = role(root, "scale");
    this.start = role(root, "start");
    this.end = role(root, "end");
    this.map = role(root, "map");
    this.mapFigure = role(root, "map-figure");
    this.mapStatus = role(root, "map-status");
    this.controller = null;
    this.source = new ImageSource(root, { api, i18n, toasts, onChange: () => this.refreshMap() });
    for (const name of owner.types) {
      const option = new Option("", name);
      i18n.set(option, `control.${name}`);
      this.type.append(option);
    }
    this.typeChanged();
    const refresh = debounce(() => this.refreshMap(), MAP_DELAY_MS);
    this.type.addEventListener("change", () => { this.typeChanged(); this.refreshMap(); });
    this.detect.addEventListener("change", () => this.refreshMap());
    for (const input of [this.low, this.high]) input.addEventListener("input", refresh);
    role(root, "remove").addEventListener("click", () => owner.remove(this));
  }

  focus() {
    this.type.focus();
    return this;
  }

  typeChanged() {
    const type = this.type.value;
    fillModels(this.model, this.owner.models[type] || [], this.i18n, this.owner.defaults[type]);
    this.detect.checked = type === "canny";
    role(this.root, "thresholds").hidden = type !== "canny";
  }

  thresholds() {
    return [numberOf(this.low) ?? 100, numberOf(this.high) ?? 200];
  }

  /** Ask the server for the map of the current image and settings, and show it. */
  async refreshMap() {
    this.controller?.abort();
    if (!this.source.reference) {
      this.mapFigure.hidden = true;
      return;
    }
    const controller = (this.controller = new AbortController());
    this.mapFigure.hidden = false;
    this.mapFigure.setAttribute("aria-busy", "true");
    this.i18n.set(this.mapStatus, "control.map_working");
    try {
      const body = { type: this.type.value, image: this.source.reference, detect: this.detect.checked };
      if (this.type.value === "canny") body.thresholds = this.thresholds();
      const blob = await this.api.controlMap(body, controller.signal);
      if (controller !== this.controller) return;
      if (this.map.src.startsWith("blob:")) URL.revokeObjectURL(this.map.src);
      this.map.src = URL.createObjectURL(blob);
      this.i18n.set(this.mapStatus, "control.map_caption");
    } catch (error) {
      if (error.name === "AbortError") return;
      this.map.removeAttribute("src");
      this.i18n.set(this.mapStatus, "control.map_failed", { reason: error.message });
    } finally {
      if (controller === this.controller) this.mapFigure.removeAttribute("aria-busy");
    }
  }

  toRequest() {
    const control = {
      type: this.type.value,
      image: this.source.reference,
      scale: numberOf(this.scale) ?? 0.7,
      start: numberOf(this.start) ?? 0,
      end: numberOf(this.end) ?? 0.9,
      detect: this.detect.checked,
    };
    if (this.model.value) control.controlnet = this.model.value;
    if (control.type === "canny") control.thresholds = this.thresholds();
    return control;
  }

  /** Show a control of a request; false when its image is not on the server. */
  async apply(control) {
    if ([...this.type.options].some((o) => o.value === control.type)) this.type.value = control.type;
    this.typeChanged();
    if (control.controlnet && [...this.model.options].some((o) => o.value === control.controlnet)) {
      this.model.value = control.controlnet;
    }
    if (control.detect != null) this.detect.checked = control.detect;
    if (control.thresholds) [this.low.value, this.high.value] = control.thresholds;
    for (const key of ["scale", "start", "end"]) if (control[key] != null) this[key].value = control[key];
    return this.source.useReference(control.image, this.i18n.t("image.from_request"));
  }
}

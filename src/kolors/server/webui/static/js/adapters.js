// Adapters of a request: IP-Adapter and FaceID (an image, a model from the server's folders, a scale), LoRAs
// picked from the server's LoRA folder with their weights, and perturbed-attention guidance.

import { $, fillModels, instantiate, numberOf, role } from "./dom.js";
import { ImageSource } from "./image_source.js";

/** The file name of a LoRA entry, whether the request names it (server) or holds its path (a PNG's record). */
function loraName(lora) {
  return String(lora.name || lora.path || lora.file || "").split(/[\\/]/).pop();
}

// The two image prompts: request field, its image's key, the server's model list, the default scale, messages.
const IMAGE_PROMPTS = [
  { id: "ip-adapter", field: "ip_adapter", imageKey: "image", models: "ip_adapters", scale: 0.5,
    messages: { legend: "ip.legend", missing: "ip.missing", preview: "ip.preview" } },
  { id: "face-id", field: "face_id", imageKey: "face", models: "face_id_models", scale: 0.8,
    messages: { legend: "face.legend", missing: "face.missing", preview: "face.preview" } },
];

/** An IP-Adapter or FaceID section (from the tpl-image-prompt template). */
class ImagePromptInput {
  constructor(spec, models, deps) {
    const root = (this.root = instantiate("tpl-image-prompt", deps.i18n));
    root.id = spec.id;
    this.field = spec.field;
    this.imageKey = spec.imageKey;
    this.enabled = role(root, "enabled");
    this.model = role(root, "model");
    this.scale = role(root, "scale");
    this.scale.value = spec.scale;
    this.preview = role(root, "preview");
    this.i18n = deps.i18n;
    deps.i18n.set(role(root, "legend"), spec.messages.legend);
    deps.i18n.set(role(root, "missing"), spec.messages.missing);
    deps.i18n.setAttr(this.preview, "alt", spec.messages.preview);
    this.source = new ImageSource(root, {
      ...deps,
      onChange: () => {
        this.preview.hidden = !this.source.url;
        if (this.source.url) {
          this.preview.src = this.source.url;
          this.enabled.checked = true;
        }
      },
    });
    this.available = models.length > 0;
    role(root, "missing").hidden = this.available;
    role(root, "fields").hidden = !this.available;
    fillModels(this.model, models, deps.i18n);
    if (models.length === 1) this.model.value = models[0];
  }

  active() {
    return this.available && this.enabled.checked;
  }

  contribute(request) {
    if (!this.active() || !this.source.reference) return;
    const value = { [this.imageKey]: this.source.reference, scale: numberOf(this.scale) ?? 0 };
    if (this.model.value) value.model = this.model.value;
    request[this.field] = value;
  }

  async apply(request) {
    const value = request[this.field];
    this.enabled.checked = Boolean(value) && this.available;
    if (!value) return true;
    if (value.scale != null) this.scale.value = value.scale;
    const model = String(value.model || "").split(/[\\/]/).pop();
    if ([...this.model.options].some((o) => o.value === model)) this.model.value = model;
    return this.source.useReference(value[this.imageKey], this.i18n.t("image.from_request"));
  }
}

export class Adapters {
  constructor(deps) {
    this.deps = deps;
    this.loraSelect = $("lora-select");
    this.loraList = $("lora-list");
    this.pagScale = $("pag-scale");
    this.pagLayers = $("pag-layers");
    $("lora-add").addEventListener("click", () => {
      if (this.loraSelect.value) this.addLora(this.loraSelect.value, 1);
    });
  }

  setup(info) {
    this.imagePrompts = IMAGE_PROMPTS.map((spec) => new ImagePromptInput(spec, info[spec.models] || [], this.deps));
    document.getElementById("image-prompts").append(...this.imagePrompts.map((input) => input.root));
    this.loras = info.loras || [];
    for (const name of this.loras) {
      const option = new Option(name, name);
      option.dataset.content = "";
      this.loraSelect.append(option);
    }
    document.getElementById("lora-missing").hidden = this.loras.length > 0;
    document.getElementById("lora-pick").hidden = this.loras.length === 0;
  }

  addLora(name, weight) {
    const row = instantiate("tpl-lora", this.deps.i18n);
    row.dataset.name = name;
    role(row, "name").textContent = name;
    role(row, "weight").value = weight;
    this.deps.i18n.setAttr(role(row, "weight"), "aria-label", "lora.weight_of", { name });
    role(row, "remove").addEventListener("click", () => row.remove());
    this.loraList.append(row);
  }

  contribute(request) {
    for (const input of this.imagePrompts) input.contribute(request);
    request.loras = [...this.loraList.children].map((row) => ({
      name: row.dataset.name,
      weight: numberOf(role(row, "weight")) ?? 1,
    }));
    const pag = numberOf(this.pagScale) || 0;
    if (pag > 0) {
      request.pag_scale = pag;
      const layers = this.pagLayers.value.split(",").map((s) => s.trim()).filter(Boolean);
      if (layers.length) request.pag_layers = layers;
    }
  }

  /** Show a request's adapters; returns the names of inputs that could not be used. */
  async apply(request) {
    const lost = [];
    for (const input of this.imagePrompts) {
      if (!(await input.apply(request))) lost.push(input.field);
    }
    this.loraList.replaceChildren();
    for (const lora of request.loras || []) {
      const name = loraName(lora);
      if (this.loras.includes(name)) this.addLora(name, lora.weight ?? 1);
      else lost.push(`lora:${name}`);
    }
    this.pagScale.value = request.pag_scale || 0;
    this.pagLayers.value = (request.pag_layers || []).join(", ");
    if (request.ip_adapter || request.face_id) document.getElementById("adapters-panel").open = true;
    if ((request.loras || []).length) document.getElementById("loras-panel").open = true;
    if (request.pag_scale) document.getElementById("pag-panel").open = true;
    return lost;
  }
}

// The generate form's own settings: prompts (with token counters), size, steps, guidance, scheduler, seed,
// number of images and run mode. Image inputs and adapters are the other parts (image_tasks.js, controls.js,
// adapters.js); main.js asks every part to add its fields to the request.

import { $, numberOf } from "./dom.js";
import { TokenCounter } from "./tokens.js";

// The official Kolors sizes (width × height); the model's own default size is offered first.
export const OFFICIAL_SIZES = [
  [1024, 1024], [1152, 896], [896, 1152], [1216, 832], [832, 1216],
  [1344, 768], [768, 1344], [1536, 640], [640, 1536],
];
const CUSTOM = "custom";

export class GenerateForm {
  constructor(api, i18n) {
    this.api = api;
    this.i18n = i18n;
    this.lastSeed = null;
    this.fields = {
      prompt: $("prompt"), negative: $("negative-prompt"), preset: $("size-preset"), width: $("width"),
      height: $("height"), steps: $("steps"), guidance: $("guidance"), guidanceStop: $("guidance-stop"),
      scheduler: $("scheduler"),
      seed: $("seed"), numImages: $("num-images"), mode: $("mode"), seedReuse: $("seed-reuse"),
    };
    const f = this.fields;
    f.preset.addEventListener("change", () => this.presetChosen());
    for (const input of [f.width, f.height]) input.addEventListener("input", () => this.sizeEdited());
    $("seed-random").addEventListener("click", () => { f.seed.value = ""; });
    f.seedReuse.addEventListener("click", () => { if (this.lastSeed !== null) f.seed.value = this.lastSeed; });
  }

  setup(info) {
    const f = this.fields;
    const limit = info.token_limit || 256;
    this.counters = [new TokenCounter(this.api, this.i18n, f.prompt, document.getElementById("prompt-tokens"), limit),
      new TokenCounter(this.api, this.i18n, f.negative, document.getElementById("negative-tokens"), limit)];
    const d = info.defaults || {};
    this.defaults = d;
    this.fillPresets(info);
    f.width.value = d.width;
    f.height.value = d.height;
    this.sizeEdited();
    f.steps.value = d.steps;
    f.guidance.value = d.guidance;
    f.guidanceStop.value = d.guidance_stop ?? 1;
    const limits = info.limits || {};
    if (limits.max_steps) f.steps.max = limits.max_steps;
    if (limits.max_images) f.numImages.max = limits.max_images;
    if (limits.max_prompt_chars) {
      f.prompt.maxLength = limits.max_prompt_chars;
      f.negative.maxLength = limits.max_prompt_chars;
    }
    this.fillOptions(f.scheduler, info.schedulers || ["default"], "scheduler");
    this.fillOptions(f.mode, ["", ...(info.modes || [])], "mode");
    const serverMode = f.mode.querySelector('option[value=""]');
    delete serverMode.dataset.content;
    const mode = this.i18n.has(`mode.${info.mode}`) ? { key: `mode.${info.mode}` } : info.mode;
    this.i18n.set(serverMode, "mode.server", { mode });
  }

  fillPresets(info) {
    const select = this.fields.preset;
    const d = info.defaults || {};
    const seen = new Set();
    const add = (w, h, key) => {
      const value = `${w}x${h}`;
      if (seen.has(value)) return;
      seen.add(value);
      const option = new Option("", value);
      this.i18n.set(option, key, { width: w, height: h });
      select.append(option);
    };
    if (d.width && d.height) add(d.width, d.height, "size.model_default");
    for (const [w, h] of [...(info.size_presets || []), ...OFFICIAL_SIZES]) add(w, h, "size.preset");
    const custom = new Option("", CUSTOM);
    this.i18n.set(custom, "size.custom");
    select.append(custom);
  }

  /** Options whose labels come from the catalogue (`prefix.name`) where it has one, else the name as data. */
  fillOptions(select, names, prefix) {
    select.replaceChildren();
    for (const name of names) {
      const option = new Option("", name);
      if (this.i18n.has(`${prefix}.${name}`)) this.i18n.set(option, `${prefix}.${name}`);
      else {
        option.textContent = name;
        option.dataset.content = "";
      }
      select.append(option);
    }
  }

  presetChosen() {
    const value = this.fields.preset.value;
    if (value === CUSTOM) return;
    const [w, h] = value.split("x");
    this.fields.width.value = w;
    this.fields.height.value = h;
  }

  sizeEdited() {
    const value = `${this.fields.width.value}x${this.fields.height.value}`;
    const known = [...this.fields.preset.options].some((o) => o.value === value);
    this.fields.preset.value = known ? value : CUSTOM;
    for (const input of [this.fields.width, this.fields.height]) input.setCustomValidity("");
  }

  setLastSeed(seed) {
    this.lastSeed = seed;
    this.fields.seedReuse.disabled = seed === null || seed === undefined;
  }

  /** Check what the browser can check; false (with the problem shown at the field) when something is wrong. */
  check(task) {
    const f = this.fields;
    const inputs = [f.steps, f.guidance, f.guidanceStop, f.numImages, f.seed];
    if (task === "text-to-image") {
      for (const input of [f.width, f.height]) {
        const value = numberOf(input);
        input.setCustomValidity(value && value % 8 ? this.i18n.t("size.multiple8", { value }) : "");
        inputs.unshift(input);
      }
    }
    f.prompt.setCustomValidity(f.prompt.value.trim() ? "" : this.i18n.t("prompt.required"));
    return [f.prompt, ...inputs].every((input) => input.reportValidity());
  }

  contribute(request, task) {
    const f = this.fields;
    request.prompt = f.prompt.value;
    request.negative_prompt = f.negative.value.trim() ? f.negative.value : null;
    if (task === "text-to-image") {
      request.width = numberOf(f.width);
      request.height = numberOf(f.height);
    }
    request.steps = numberOf(f.steps);
    request.guidance = numberOf(f.guidance);
    request.guidance_stop = numberOf(f.guidanceStop);
    request.scheduler = f.scheduler.value;
    request.seed = numberOf(f.seed);
    request.num_images = numberOf(f.numImages) || 1;
    if (f.mode.value) request.mode = f.mode.value;
  }

  apply(request) {
    const f = this.fields;
    f.prompt.value = request.prompt ?? "";
    f.negative.value = request.negative_prompt ?? "";
    if (request.width && request.height) {
      f.width.value = request.width;
      f.height.value = request.height;
      this.sizeEdited();
    }
    if (request.steps != null) f.steps.value = request.steps;
    if (request.guidance != null) f.guidance.value = request.guidance;
    f.guidanceStop.value = request.guidance_stop ?? this.defaults.guidance_stop ?? 1;
    if (request.scheduler && [...f.scheduler.options].some((o) => o.value === request.scheduler)) {
      f.scheduler.value = request.scheduler;
    }
    f.seed.value = request.seed ?? "";
    f.numImages.value = request.num_images || 1;
    f.mode.value = [...f.mode.options].some((o) => o.value === request.mode) ? request.mode : "";
    for (const counter of this.counters) counter.count();
  }

  /** Size inputs are only for text to image: the other tasks take the input image's size. */
  showSize(task) {
    const fromImage = task !== "text-to-image";
    document.getElementById("size-row").hidden = fromImage;
    document.getElementById("size-inputs").hidden = fromImage;
    document.getElementById("size-from-image").hidden = !fromImage;
  }
}

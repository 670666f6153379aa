// Parameters in and out of the form: the request built from every part of the form, a request (a job's, or the
// one stored in a dropped PNG made by kolors or AUTOMATIC1111) shown in the form again.

export class Parameters {
  /** `parts`: objects with `contribute(request, task)` and `apply(request)` (the latter may return lost fields). */
  constructor({ api, i18n, toasts, parts, taskOf }) {
    this.api = api;
    this.i18n = i18n;
    this.toasts = toasts;
    this.parts = parts;
    this.taskOf = taskOf;
  }

  /** The GenerationRequest JSON the form describes (images uploaded where needed). */
  async build() {
    const task = this.taskOf();
    const request = {};
    for (const part of this.parts) await part.contribute(request, task);
    return request;
  }

  /** Fill the form from `request`; says which image inputs could not be carried over. */
  async apply(request) {
    const lost = [];
    for (const part of this.parts) lost.push(...((await part.apply(request)) || []));
    if (lost.length) this.toasts.show("params.lost", { detail: lost.join(", "), timeout: 12000 });
    return lost;
  }

  /** Load the parameters stored in a PNG file. */
  async loadPng(file) {
    try {
      const { request, source } = await this.api.parameters(file);
      await this.apply(request);
      this.toasts.show("params.loaded", { vars: { source: { key: `params.source.${source}` } } });
    } catch (error) {
      this.toasts.error("error.parameters", error);
    }
  }

  /** Dropping a PNG anywhere else on the page loads its parameters (image inputs take their own drops). */
  enableDrop(overlay, input) {
    let depth = 0;
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    document.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      depth++;
      overlay.hidden = false;
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) overlay.hidden = true;
    });
    document.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
    document.addEventListener("drop", (event) => {
      depth = 0;
      overlay.hidden = true;
      const file = event.dataTransfer?.files[0];
      if (!file) return;
      event.preventDefault();
      this.loadPng(file);
    });
    window.addEventListener("drop", () => { depth = 0; overlay.hidden = true; }, true);
    input.addEventListener("change", () => {
      if (input.files[0]) this.loadPng(input.files[0]);
      input.value = "";
    });
  }
}

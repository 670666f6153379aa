// The page: reads the server's /api/v1/info, builds the form's parts, and wires generation, the queue, the
// gallery and the viewer together. Each concern lives in its own module (see the imports).

import { Adapters } from "./adapters.js";
import { Api } from "./api.js";
import { KeyDialog } from "./auth.js";
import { Controls } from "./controls.js";
import { $, Toasts } from "./dom.js";
import { GenerateForm } from "./form.js";
import { Gallery, Viewer } from "./gallery.js";
import { I18n, preferredLanguage } from "./i18n.js";
import { ImageTasks } from "./image_tasks.js";
import { Parameters } from "./parameters.js";
import { Queue } from "./queue.js";

const LOADING_POLL_MS = 2000;

async function start() {
  const i18n = new I18n("ui/i18n/");
  await i18n.use(preferredLanguage());
  const language = $("language");
  language.value = i18n.language;
  language.addEventListener("change", () => i18n.use(language.value, { remember: true }));
  if (/Mac|iPhone|iPad/.test(navigator.platform)) $("generate").querySelector("kbd").dataset.i18n = "generate.shortcut_mac";
  i18n.apply($("generate"));

  const toasts = new Toasts($("toasts"), i18n);
  let keys;
  const api = new Api({ askKey: (options) => keys.ask(options) });
  keys = new KeyDialog(api);
  const info = await serverInfo(api, toasts);
  if (!info) return;
  if (info.auth && !api.key) await keys.ask();
  if (info.auth) $("key-button").hidden = false;
  $("model-name").textContent = info.model;
  $("model-line").hidden = false;

  const deps = { api, i18n, toasts };
  const form = new GenerateForm(api, i18n);
  const imageTasks = new ImageTasks({ ...deps, onTask: (task) => form.showSize(task) });
  const controls = new Controls(deps);
  const adapters = new Adapters(deps);
  for (const part of [form, imageTasks, controls, adapters]) part.setup(info);
  const parameters = new Parameters({ ...deps, parts: [form, imageTasks, controls, adapters],
    taskOf: () => imageTasks.task });

  const viewer = new Viewer({
    ...deps,
    onReuse: async (job, index) => {
      await parameters.apply({ ...job.request, seed: job.images[index].seed });
      $("prompt").focus();
    },
    onSend: (job, index, task) => imageTasks.useResult(`job:${job.id}/${index}`, task),
  });
  const gallery = new Gallery({ ...deps, onOpen: (job, index) => viewer.show(job, index) });
  const queue = new Queue({
    ...deps,
    onFinished: (job) => {
      gallery.add(job);
      if (job.images?.length) {
        form.setLastSeed(job.images[0].seed);
        viewer.show(job, 0);
      }
    },
  });

  async function generate() {
    const task = imageTasks.task;
    if (!form.check(task) || !imageTasks.check(task) || !controls.check()) return;
    const button = $("generate");
    button.disabled = true;
    try {
      const request = await parameters.build();
      const job = await api.submit(request);
      queue.track({ ...job, request });
    } catch (error) {
      const key = error.status === 429 ? "error.queue_full" : "error.submit";
      toasts.error(key, error, { seconds: error.retryAfter ?? "?" });
      markInvalid(error.param);
    } finally {
      button.disabled = false;
    }
  }

  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    generate();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !$("key-dialog").open) {
      event.preventDefault();
      generate();
    }
  });
  parameters.enableDrop($("drop-overlay"), $("params-file"));

  try {
    await Promise.all([queue.restore(), gallery.load()]);
  } catch (error) {
    toasts.error("error.jobs", error);
  }
  document.body.dataset.ready = "true";
}

/** The server's /api/v1/info once its model is loaded (its defaults are the model's); null if unreachable. */
async function serverInfo(api, toasts) {
  let waiting = null;
  for (;;) {
    let info;
    try {
      info = await api.info();
    } catch (error) {
      waiting?.remove();
      toasts.error("error.info", error);
      return null;
    }
    if (info.ready !== false) {
      waiting?.remove();
      return info;
    }
    waiting ??= toasts.show("app.loading", { timeout: 0 });
    await new Promise((resolve) => setTimeout(resolve, LOADING_POLL_MS));
  }
}

/** Point at the field the server named in its error (`param`), where the form has it. */
function markInvalid(param) {
  const ids = { prompt: "prompt", negative_prompt: "negative-prompt", width: "width", height: "height",
    steps: "steps", guidance: "guidance", seed: "seed", num_images: "num-images", strength: "strength",
    feather: "feather", pag_scale: "pag-scale", pag_layers: "pag-layers" };
  const input = param && $(ids[param]);
  if (!input) return;
  input.setAttribute("aria-invalid", "true");
  input.addEventListener("input", () => input.removeAttribute("aria-invalid"), { once: true });
  input.focus();
}

start();

// The queue: one card per job that is waiting or running, following the job's events (position, step i/n, ETA,
// the previews the server streams) with a cancel button. Jobs live on the server, so a reloaded page finds the
// running ones again (GET /api/v1/jobs?status=queued,running) and follows them.

import { $, instantiate, role } from "./dom.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const RECONNECT_MS = 1000;
const CANCELLED_SHOWN_MS = 4000;

export class Queue {
  constructor({ api, i18n, toasts, onFinished }) {
    this.api = api;
    this.i18n = i18n;
    this.toasts = toasts;
    this.onFinished = onFinished;
    this.list = $("queue-list");
    this.empty = $("queue-empty");
    this.cards = new Map();
  }

  /** Follow the jobs the server is still working on (after a reload). */
  async restore() {
    const { jobs } = await this.api.jobs({ status: "queued,running" });
    for (const job of jobs.reverse()) this.track(job);
  }

  track(job) {
    if (this.cards.has(job.id)) return this.cards.get(job.id);
    const card = new JobCard(this, job);
    this.cards.set(job.id, card);
    this.list.append(card.root);
    this.updateEmpty();
    card.follow();
    return card;
  }

  forget(card) {
    this.cards.delete(card.job.id);
    card.root.remove();
    this.updateEmpty();
  }

  updateEmpty() {
    this.empty.hidden = this.cards.size > 0;
  }
}

class JobCard {
  constructor(queue, job) {
    this.queue = queue;
    this.job = job;
    this.i18n = queue.i18n;
    this.root = instantiate("tpl-job", this.i18n);
    this.root.dataset.job = job.id;
    role(this.root, "prompt").textContent = job.request?.prompt ?? "";
    this.status = role(this.root, "status");
    this.detail = role(this.root, "detail");
    this.bar = role(this.root, "bar");
    this.preview = role(this.root, "preview");
    this.cancelButton = role(this.root, "cancel");
    this.cancelButton.addEventListener("click", () => this.cancel());
    role(this.root, "dismiss").addEventListener("click", () => queue.forget(this));
    this.controller = new AbortController();
    this.show(job.status, job);
    if (job.progress) this.progress(job.progress);
  }

  show(status, data = {}) {
    this.root.dataset.status = status;
    this.i18n.set(this.status, `status.${status}`);
    if (status === "queued" && data.position != null) {
      const key = data.position > 0 ? "queue.ahead" : "queue.next"; // position: jobs ahead of this one
      this.i18n.set(this.detail, key, { position: data.position });
    } else if (status !== "running") {
      this.detail.textContent = "";
      delete this.detail.dataset.i18n;
    }
  }

  progress({ step, steps, fraction, eta_s: eta, preview }) {
    this.show("running");
    this.bar.value = fraction ?? (steps ? step / steps : 0);
    const vars = { step, steps, eta: eta == null ? null : Math.max(0, Math.round(eta)) };
    this.i18n.set(this.detail, vars.eta == null ? "progress.step" : "progress.step_eta", vars);
    if (preview) {
      this.preview.src = preview;
      this.preview.hidden = false;
    }
  }

  onEvent(name, data) {
    if (name === "queued") this.show("queued", data);
    else if (name === "started") this.show("running");
    else if (name === "progress") this.progress(data);
    else if (TERMINAL.has(name)) this.finish(data?.id ? data : { ...this.job, status: name });
  }

  /** Read the job's events until it ends; reconnect when the stream breaks before that. */
  async follow() {
    while (!this.finished) {
      try {
        await this.queue.api.follow(this.job.id, (name, data) => this.onEvent(name, data), this.controller.signal);
        if (this.finished) return;
        const job = await this.queue.api.job(this.job.id);
        if (TERMINAL.has(job.status)) return this.finish(job);
      } catch (error) {
        if (error.name === "AbortError") return;
        if (error.status === 404) return this.queue.forget(this);
      }
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  async cancel() {
    this.cancelButton.disabled = true;
    try {
      const job = await this.queue.api.cancel(this.job.id);
      if (TERMINAL.has(job.status)) this.finish(job);
    } catch (error) {
      this.cancelButton.disabled = false;
      this.queue.toasts.error("error.cancel", error);
    }
  }

  finish(job) {
    if (this.finished) return;
    this.finished = true;
    this.job = job;
    this.controller.abort();
    this.show(job.status);
    this.cancelButton.hidden = true;
    if (job.status === "succeeded") {
      this.queue.forget(this);
      this.queue.onFinished(job);
    } else if (job.status === "failed") {
      const error = role(this.root, "error");
      error.textContent = job.error || "";
      error.hidden = false;
      role(this.root, "dismiss").hidden = false;
    } else {
      setTimeout(() => this.queue.forget(this), CANCELLED_SHOWN_MS);
    }
  }
}

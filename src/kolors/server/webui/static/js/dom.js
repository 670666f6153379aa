// Small DOM helpers shared by the page's modules: templates, toasts, copying, downloads.

let counter = 0;

/** The page element with this id. */
export const $ = (id) => document.getElementById(id);

/** A copy of `<template id=...>`'s first element with its ids made unique (labels and ARIA references follow). */
export function instantiate(templateId, i18n) {
  const element = document.getElementById(templateId).content.firstElementChild.cloneNode(true);
  const prefix = `${templateId}-${++counter}-`;
  for (const node of [element, ...element.querySelectorAll("[id], [for], [aria-describedby], [aria-labelledby]")]) {
    for (const attr of ["id", "for", "aria-describedby", "aria-labelledby"]) {
      if (node.hasAttribute(attr)) {
        node.setAttribute(attr, node.getAttribute(attr).split(" ").map((id) => prefix + id).join(" "));
      }
    }
  }
  i18n.apply(element);
  return element;
}

/** The element of `root` with `data-role=name`. */
export function role(root, name) {
  return root.querySelector(`[data-role="${name}"]`);
}

/** Show a message for a while: a translated text, with optional data (e.g. the server's error message). */
export class Toasts {
  constructor(container, i18n) {
    this.container = container;
    this.i18n = i18n;
  }

  show(key, { vars, detail, error = false, timeout = 8000 } = {}) {
    const toast = document.createElement("div");
    toast.className = error ? "toast error" : "toast";
    toast.setAttribute("role", error ? "alert" : "status");
    const message = document.createElement("p");
    message.className = "toast-text";
    const text = document.createElement("span");
    this.i18n.set(text, key, vars);
    message.append(text);
    if (detail) {
      const data = document.createElement("span");
      data.dataset.content = "";
      data.className = "toast-detail";
      data.textContent = detail;
      message.append(" ", data);
    }
    toast.append(message);
    const close = document.createElement("button");
    close.type = "button";
    close.className = "icon";
    close.textContent = "×";
    this.i18n.setAttr(close, "aria-label", "common.close");
    close.addEventListener("click", () => toast.remove());
    toast.append(close);
    this.container.append(toast);
    if (timeout) setTimeout(() => toast.remove(), timeout);
    return toast;
  }

  error(key, error, vars) {
    console.error(error);
    return this.show(key, { vars, detail: error?.message, error: true, timeout: 15000 });
  }
}

/** Put `text` on the clipboard (the async API where the page is a secure context, else a hidden textarea). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      /* permission refused: fall back */
    }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "visually-hidden";
  document.body.append(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("copy refused by the browser");
}

/** Save a Blob as a file named `name`. */
export function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Call `fn` `delay` ms after the last of a burst of calls. */
export function debounce(fn, delay) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), delay);
  };
}

/** A number input's value as a number, or null when it is empty. */
export function numberOf(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

/** Fill `select` with a "default" choice (value "") and `names` (file or folder names: data, not messages). */
export function fillModels(select, names, i18n, defaultName = null) {
  select.replaceChildren();
  const fallback = new Option("", "");
  if (defaultName) i18n.set(fallback, "common.default_named", { name: defaultName });
  else i18n.set(fallback, "common.default");
  select.append(fallback);
  for (const name of names) {
    const option = new Option(name, name);
    option.dataset.content = "";
    select.append(option);
  }
}

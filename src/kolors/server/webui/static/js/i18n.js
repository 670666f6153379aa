// Interface language: the two message catalogues (i18n/zh.json, i18n/en.json) and the page's translated text.
//
// Every string the page shows comes from a catalogue. Markup names its key: `data-i18n="key"` (the element's
// text) and `data-i18n-attr="placeholder=key;title=key2"` (attributes); values filled in at run time live in
// `data-i18n-vars` (JSON), so switching the language re-renders everything. Text that is data, not interface
// (prompts, file names, parameters), sits inside an element marked `data-content`.

export const LANGUAGES = ["zh", "en"];
const STORAGE_KEY = "kolors-language";
const HTML_LANG = { zh: "zh-CN", en: "en" };

/** The remembered language, else the browser's first language we have, else English. */
export function preferredLanguage() {
  const stored = localStorage.getItem(STORAGE_KEY);
  if (LANGUAGES.includes(stored)) return stored;
  for (const tag of navigator.languages || [navigator.language || ""]) {
    const base = tag.toLowerCase().split("-")[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

export function format(text, vars) {
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

export class I18n {
  constructor(base) {
    this.base = base;
    this.catalogues = {};
    this.language = null;
    this.listeners = [];
  }

  /** Switch to `language` (loading its catalogue once) and re-render the page; `remember` stores the choice. */
  async use(language, { remember = false } = {}) {
    if (!this.catalogues[language]) {
      const response = await fetch(`${this.base}${language}.json`);
      if (!response.ok) throw new Error(`message catalogue ${language}: HTTP ${response.status}`);
      this.catalogues[language] = await response.json();
    }
    this.language = language;
    if (remember) localStorage.setItem(STORAGE_KEY, language);
    document.documentElement.lang = HTML_LANG[language];
    this.apply(document);
    for (const listener of this.listeners) listener(language);
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  has(key) {
    return key in (this.catalogues[this.language] || {});
  }

  t(key, vars) {
    const text = this.catalogues[this.language]?.[key];
    if (text === undefined) {
      console.warn(`kolors web UI: no message '${key}' in the ${this.language} catalogue`);
      return key;
    }
    return format(text, vars && this.resolve(vars));
  }

  /** Variables may themselves be messages: `{mode: {key: "mode.fast"}}` is rendered in the current language. */
  resolve(vars) {
    const resolved = {};
    for (const [name, value] of Object.entries(vars)) {
      resolved[name] = value && typeof value === "object" && "key" in value ? this.t(value.key, value.vars) : value;
    }
    return resolved;
  }

  /** Give `element` the text of `key` (kept translated when the language changes). */
  set(element, key, vars) {
    element.dataset.i18n = key;
    this.setVars(element, vars);
    element.textContent = this.t(key, vars);
  }

  /** Give `element` the attribute `name` from `key` (kept translated; `vars` shared with its text). */
  setAttr(element, name, key, vars) {
    const pairs = parseAttrSpec(element.dataset.i18nAttr).filter(([attr]) => attr !== name);
    pairs.push([name, key]);
    element.dataset.i18nAttr = pairs.map((pair) => pair.join("=")).join(";");
    if (vars) this.setVars(element, vars);
    element.setAttribute(name, this.t(key, this.varsOf(element)));
  }

  setVars(element, vars) {
    if (vars) element.dataset.i18nVars = JSON.stringify(vars);
    else delete element.dataset.i18nVars;
  }

  varsOf(element) {
    return element.dataset.i18nVars ? JSON.parse(element.dataset.i18nVars) : undefined;
  }

  /** Render every translated text and attribute under `root` (an element, fragment or the document). */
  apply(root) {
    const select = (selector) => [
      ...(root.matches?.(selector) ? [root] : []),
      ...root.querySelectorAll(selector),
    ];
    for (const element of select("[data-i18n]")) {
      element.textContent = this.t(element.dataset.i18n, this.varsOf(element));
    }
    for (const element of select("[data-i18n-attr]")) {
      for (const [attr, key] of parseAttrSpec(element.dataset.i18nAttr)) {
        element.setAttribute(attr, this.t(key, this.varsOf(element)));
      }
    }
  }
}

function parseAttrSpec(spec) {
  return (spec || "").split(";").filter(Boolean).map((pair) => pair.split("=").map((s) => s.trim()));
}

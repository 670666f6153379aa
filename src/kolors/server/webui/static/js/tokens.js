// The live token counter of a prompt box: the model's own tokenizer (POST /api/v1/tokenize), asked a moment after
// typing stops. It warns when the prompt nears the limit, and says how many tokens the model will drop past it.

import { debounce } from "./dom.js";

const DELAY_MS = 300;
const NEAR = 0.9; // warn from 90% of the limit

export class TokenCounter {
  constructor(api, i18n, textarea, output, limit) {
    this.api = api;
    this.i18n = i18n;
    this.textarea = textarea;
    this.output = output;
    this.limit = limit;
    this.controller = null;
    this.schedule = debounce(() => this.count(), DELAY_MS);
    textarea.addEventListener("input", this.schedule);
    this.render({ tokens: 0, limit, dropped: 0 });
  }

  async count() {
    this.controller?.abort();
    const controller = (this.controller = new AbortController());
    try {
      const result = await this.api.tokenize(this.textarea.value, controller.signal);
      if (controller === this.controller) this.render(result);
    } catch (error) {
      if (error.name !== "AbortError") console.warn("token count failed", error);
    }
  }

  render({ tokens, limit, dropped }) {
    const state = dropped > 0 ? "over" : tokens >= NEAR * limit ? "near" : "ok";
    this.output.className = `tokens ${state}`;
    this.output.dataset.tokens = String(tokens);
    this.i18n.set(this.output, `tokens.${state}`, { tokens, limit, dropped });
  }
}

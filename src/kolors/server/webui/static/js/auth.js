// The API key prompt: shown when the server has keys and the page has none (or the server refused it). The key is
// kept in sessionStorage by the API client: it lasts for this tab's session.

export class KeyDialog {
  constructor(api) {
    this.api = api;
    this.dialog = document.getElementById("key-dialog");
    this.input = document.getElementById("key-input");
    this.rejected = document.getElementById("key-error");
    this.pending = null;
    this.dialog.addEventListener("cancel", (event) => event.preventDefault()); // the key is needed to go on
    this.dialog.addEventListener("close", () => {
      const key = this.input.value.trim();
      if (!key) {
        this.dialog.showModal();
        return;
      }
      this.api.key = key;
      this.input.value = "";
      const resolve = this.pending;
      this.pending = null;
      resolve?.();
    });
    const button = document.getElementById("key-button");
    button.addEventListener("click", () => this.ask());
    this.button = button;
  }

  /** Resolves once a key was entered. */
  ask({ rejected = false } = {}) {
    this.button.hidden = false;
    if (!this.pending) {
      this.promise = new Promise((resolve) => { this.pending = resolve; });
      this.rejected.hidden = !rejected;
      this.dialog.showModal();
      this.input.focus();
    }
    return this.promise;
  }
}

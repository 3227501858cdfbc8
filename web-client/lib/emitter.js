// A minimal event emitter: on/off/once/emit. A throwing listener never breaks the others.

export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    if (typeof listener !== "function") throw new TypeError(`listener for "${event}" must be a function`);
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  once(event, listener) {
    const off = this.on(event, (...args) => { off(); listener(...args); });
    return off;
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        // A bug in one handler must not stop delivery to the others or corrupt the client's state.
        (globalThis.reportError ?? console.error)(err);
      }
    }
  }
}

// Where each channel's last position ({seq, epoch}) is kept, so that a page reload resumes
// instead of replaying the whole history. Storage failures (quota, private mode) only lose
// the ability to resume after a reload; they never break the live connection.

class MemoryStorage {
  #items = new Map();
  getItem(key) { return this.#items.has(key) ? this.#items.get(key) : null; }
  setItem(key, value) { this.#items.set(key, String(value)); }
  removeItem(key) { this.#items.delete(key); }
}

function resolveStorage(storage) {
  if (storage === "none") return new MemoryStorage();
  if (storage === "session" || storage === undefined) return globalThis.sessionStorage ?? new MemoryStorage();
  if (storage === "local") return globalThis.localStorage ?? new MemoryStorage();
  if (storage && typeof storage.getItem === "function" && typeof storage.setItem === "function") return storage;
  throw new TypeError('storage must be "session", "local", "none" or an object with getItem/setItem/removeItem');
}

export class PositionStore {
  /**
   * @param storage "session" (default), "local", "none", or a Storage-like object.
   * @param namespace key prefix, so two clients on one page (or two servers) do not mix positions.
   */
  constructor(storage, namespace = "herald") {
    this.storage = resolveStorage(storage);
    this.namespace = namespace;
  }

  #key(channel) { return `${this.namespace}:position:${channel}`; }

  /** The stored position of a channel, or null. */
  load(channel) {
    try {
      const raw = this.storage.getItem(this.#key(channel));
      if (!raw) return null;
      const { seq, epoch } = JSON.parse(raw);
      if (!Number.isSafeInteger(seq) || seq < 0 || typeof epoch !== "string") return null;
      return { seq, epoch };
    } catch {
      return null;
    }
  }

  save(channel, position) {
    try {
      this.storage.setItem(this.#key(channel), JSON.stringify({ seq: position.seq, epoch: position.epoch }));
    } catch {
      // Quota exceeded or storage disabled: resuming after a reload is best effort.
    }
  }

  forget(channel) {
    try {
      this.storage.removeItem?.(this.#key(channel));
    } catch {
      // As above.
    }
  }
}

// Full-jitter exponential backoff (see "Exponential Backoff And Jitter", AWS Architecture Blog):
// the n-th retry waits a uniformly random time in [0, min(max, initial * factor^n)], so a
// thousand browsers dropped by the same restart do not all come back in the same millisecond.

export class Backoff {
  constructor({ initial = 500, max = 20000, factor = 2, random = Math.random } = {}) {
    if (!(initial > 0) || !(max >= initial) || !(factor >= 1)) {
      throw new RangeError("backoff needs initial > 0, max >= initial and factor >= 1");
    }
    this.initial = initial;
    this.max = max;
    this.factor = factor;
    this.random = random;
    this.attempts = 0;
  }

  /** The ceiling of the next delay, before jitter. */
  ceiling() {
    return Math.min(this.max, this.initial * this.factor ** this.attempts);
  }

  /** The next delay in milliseconds; each call counts one attempt. */
  next() {
    const delay = Math.floor(this.random() * this.ceiling());
    this.attempts += 1;
    return delay;
  }

  reset() {
    this.attempts = 0;
  }
}

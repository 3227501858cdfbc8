// Tokens as the client sees them: when one expires (read, never verified: the server verifies),
// and when to ask for a fresh one.

/** The `exp` claim of a JWT in seconds, or null when there is none or it cannot be read. */
export function tokenExp(token) {
  try {
    const part = String(token).split(".")[1];
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((part.length + 3) % 4);
    const exp = JSON.parse(globalThis.atob(base64)).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

/** The largest delay timers take (2^31 - 1 ms); a longer one would fire at once. */
const MAX_DELAY = 2 ** 31 - 1;
/** The `exp` Herald reports for a connection without a deadline (2^53 - 1). */
export const NO_EXPIRY = 2 ** 53 - 1;

/**
 * Milliseconds until a token expiring at `exp` (seconds) should be replaced: when `share` of
 * what is left has passed, at least a second, within what timers take; null: never.
 */
export function refreshDelay(exp, nowMs, share = 0.8) {
  if (typeof exp !== "number" || exp >= NO_EXPIRY) return null;
  return Math.min(MAX_DELAY, Math.max(1000, (exp * 1000 - nowMs) * share));
}

// Typed events: `on(name, f)` returns the unsubscribe function; a listener that throws is
// reported through "error" (when the map has one) and never stops the others.

export type Listener<T> = (v: T) => void;

export class Emitter<Events extends { error: Error }> {
  private listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof Events>(event: K, f: Listener<Events[K]>): () => void {
    let s = this.listeners.get(event);
    if (!s) this.listeners.set(event, (s = new Set()));
    s.add(f as Listener<never>);
    return () => {
      s.delete(f as Listener<never>);
    };
  }

  protected emit<K extends keyof Events>(event: K, v: Events[K]): void {
    const s = this.listeners.get(event);
    if (!s) return;
    for (const f of [...s]) {
      try {
        (f as Listener<Events[K]>)(v);
      } catch (e) {
        if (event !== "error") this.emit("error", e instanceof Error ? e : new Error(String(e)));
      }
    }
  }
}

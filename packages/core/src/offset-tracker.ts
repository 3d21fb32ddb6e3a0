/**
 * Turns out-of-order acks into a low-watermark commit position, per partition. Log
 * transports (ackModel 'offset') use one tracker per owned partition: the committed position
 * is the last offset such that it and every earlier delivered offset are acked. Offsets must
 * be tracked in increasing order; gaps between them are allowed.
 */
import { HeraldError } from './errors.ts';

interface Slot {
  readonly offset: number;
  done: boolean;
}

export class OffsetTracker {
  readonly #slots: Slot[] = [];
  #head = 0;
  readonly #byOffset = new Map<number, Slot>();
  /** Offsets done and passed by the watermark but not yet committed, oldest first. */
  readonly #doneUncommitted: number[] = [];
  #doneHead = 0;
  #watermark: number;
  #lastTracked: number;
  #committed: number;

  /** `committed`: the last offset already committed (everything at or below it is done). */
  constructor(committed: number) {
    this.#watermark = committed;
    this.#lastTracked = committed;
    this.#committed = committed;
  }

  /** Registers a delivered offset. Offsets must increase. */
  track(offset: number): void {
    if (!(offset > this.#lastTracked)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `offset ${offset} tracked out of order (last tracked ${this.#lastTracked})`);
    }
    const slot: Slot = { offset, done: false };
    this.#slots.push(slot);
    this.#byOffset.set(offset, slot);
    this.#lastTracked = offset;
  }

  /** Marks `offset` done. Returns true when the watermark moved. Unknown or repeated offsets are ignored. */
  ack(offset: number): boolean {
    const slot = this.#byOffset.get(offset);
    if (!slot || slot.done) return false;
    slot.done = true;
    this.#byOffset.delete(offset);
    let moved = false;
    while (this.#head < this.#slots.length && this.#slots[this.#head]!.done) {
      this.#watermark = this.#slots[this.#head]!.offset;
      this.#doneUncommitted.push(this.#watermark);
      this.#head++;
      moved = true;
    }
    if (this.#head > 1024 && this.#head * 2 > this.#slots.length) {
      this.#slots.splice(0, this.#head);
      this.#head = 0;
    }
    return moved;
  }

  /** The last offset that it and everything before it are done: the position to commit. */
  get watermark(): number {
    return this.#watermark;
  }

  /** The last committed position (as told by `markCommitted`). */
  get committed(): number {
    return this.#committed;
  }

  /** The highest offset tracked so far. */
  get lastTracked(): number {
    return this.#lastTracked;
  }

  /** Whether the watermark has moved past the committed position. */
  get dirty(): boolean {
    return this.#watermark > this.#committed;
  }

  /** Delivered offsets above the committed position (done or not): what a restart would redeliver. Exact, whatever the gaps between offsets. */
  get uncommitted(): number {
    return this.#slots.length - this.#head + (this.#doneUncommitted.length - this.#doneHead);
  }

  /** Delivered and not yet done. */
  get pending(): number {
    return this.#byOffset.size;
  }

  markCommitted(position: number): void {
    if (position > this.#committed) this.#committed = position;
    const done = this.#doneUncommitted;
    while (this.#doneHead < done.length && done[this.#doneHead]! <= this.#committed) this.#doneHead++;
    if (this.#doneHead > 1024 && this.#doneHead * 2 > done.length) {
      done.splice(0, this.#doneHead);
      this.#doneHead = 0;
    }
  }
}

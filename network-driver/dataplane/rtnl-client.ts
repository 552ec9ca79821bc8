// One rtnetlink socket, many requests in flight, few system calls.
//
// The kernel handles the messages of one datagram in order, inside sendmsg, and reports a failure
// of any of them whether or not it asked for an ACK (netlink_rcv_skb). So requests made in the same
// turn of the event loop leave as one datagram, and only the last of them (and every GET, whose
// reply needs an end marker) carries NLM_F_ACK: when that ACK arrives, every request before it that
// has not reported an error succeeded. Thousands of FDB and ARP writes then cost a few dozen
// sendmsg/recvmsg calls instead of two each.
//
// Limits that shape the rest:
// - at most `maxInFlight` requests are unsettled at once, so error reports cannot overflow the
//   receive buffer; if it overflows anyway (ENOBUFS), every request in flight fails, as nobody can
//   tell which of them the kernel applied;
// - a dump runs alone: the kernel serves one dump per socket at a time and continues it as we read;
// - requests leave in the order they were made, which callers rely on (ARP before FDB).
// The netlink package provides the socket (its native binding), header and error parsing and the
// rtnetlink message codecs; the batching and request tracking above it are ours.
import { Flags, FlagsGet, formatMessage, MessageType as NetlinkMessageType, parseError, parseMessages, Protocol, RawNetlinkSocket, rt, type NetlinkMessage } from 'netlink';
import { NetlinkError } from './netlink-error.js';

export interface RtnlClientOptions {
  /** A request without an answer after this long fails. Default 10 000 ms. */
  readonly timeoutMs?: number;
  /** Unsettled requests at most. Default 256. */
  readonly maxInFlight?: number;
  /** SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max). Default 1 MiB. */
  readonly receiveBufferBytes?: number;
}

interface Request {
  readonly type: number;
  readonly flags: number;
  readonly body: readonly Uint8Array[];
  readonly dump: boolean;
  readonly resolve: (messages: NetlinkMessage[]) => void;
  readonly reject: (error: Error) => void;
}

interface InFlight {
  readonly request: Request;
  readonly sentAt: number;
  readonly replies: NetlinkMessage[];
}

/** A dump the kernel marks interrupted (the table changed under it) is repeated this often. */
const DUMP_ATTEMPTS = 5;
/** rtnetlink GET requests have types 18, 22, 26, ... (RTM_GETLINK, RTM_GETADDR, ...). */
const isGet = (type: number): boolean => type >= 16 && type % 4 === 2;
const PADDING = [Buffer.alloc(0), Buffer.alloc(3), Buffer.alloc(2), Buffer.alloc(1)] as const;

export class RtnlClient {
  private readonly socket: RawNetlinkSocket;
  private readonly port: number;
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  /** Requests not yet sent, in order, from `head` on (compacted now and then rather than shifted). */
  private queue: Request[] = [];
  private head = 0;
  /** Sent and unsettled, by sequence number, in sending order. */
  private readonly inFlight = new Map<number, InFlight>();
  /** ACK-carrying sequence number -> the sequence numbers its ACK settles. */
  private readonly settles = new Map<number, number[]>();
  private seq = 0;
  private dumping = false;
  private flushScheduled = false;
  private referenced = true;
  private watchdog: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: RtnlClientOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxInFlight = options.maxInFlight ?? 256;
    this.socket = new RawNetlinkSocket(Protocol.ROUTE);
    this.port = this.socket.address().port;
    try {
      this.socket.setRecvBufferSize(options.receiveBufferBytes ?? 1024 * 1024);
    } catch {
      // The default buffer still holds far more than a window of error reports.
    }
    this.socket.on('message', (data: Buffer) => this.receive(data));
    // Without a listener an asynchronous socket error (ENOBUFS) would crash the process.
    this.socket.on('error', (error: Error) => this.failInFlight(error));
    this.updateRef();
  }

  /** Sends one request and resolves with its reply messages (none for a write). */
  async request(type: rt.MessageType, body: readonly Uint8Array[], flags = 0): Promise<rt.Message[]> {
    const replies = await this.enqueue(type, flags, body, false);
    return replies.map((message) => rt.parseMessage(message.type, message.data));
  }

  /** Dumps a table (NLM_F_DUMP), alone on the socket, repeated when the kernel flags it inconsistent. */
  async dump(type: rt.MessageType, body: readonly Uint8Array[]): Promise<rt.Message[]> {
    for (let attempt = 1; ; attempt++) {
      const replies = await this.enqueue(type, FlagsGet.DUMP, body, true);
      const interrupted = replies.some((message) => (message.flags & Flags.DUMP_INTR) !== 0);
      if (!interrupted || attempt === DUMP_ATTEMPTS) return replies.map((message) => rt.parseMessage(message.type, message.data));
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    const error = new Error('netlink socket closed');
    this.failInFlight(error);
    for (const request of this.queue.slice(this.head)) request.reject(error);
    this.queue = [];
    this.head = 0;
    this.socket.close();
  }

  private enqueue(type: number, flags: number, body: readonly Uint8Array[], dump: boolean): Promise<NetlinkMessage[]> {
    if (this.closed) return Promise.reject(new Error('netlink socket closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ type, flags, body, dump, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Flushes after the current turn, so requests made together leave together. */
  private scheduleFlush(): void {
    if (this.flushScheduled || this.closed) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.closed || this.dumping) return;
    const batch: { seq: number; request: Request; ack: boolean }[] = [];
    for (let next = this.queue[this.head]; next !== undefined; next = this.queue[this.head]) {
      if (next.dump ? this.inFlight.size > 0 : this.inFlight.size >= this.maxInFlight) break;
      this.head++;
      const seq = this.nextSeq();
      this.inFlight.set(seq, { request: next, sentAt: Date.now(), replies: [] });
      // A GET or a dump marks its own end; writes are settled by the next ACK.
      batch.push({ seq, request: next, ack: next.dump || isGet(next.type) });
      if (next.dump) {
        this.dumping = true;
        break;
      }
    }
    this.compactQueue();
    const last = batch[batch.length - 1];
    if (last === undefined) return;
    last.ack = true;
    const chunks: Uint8Array[] = [];
    let group: number[] = [];
    for (const { seq, request, ack } of batch) {
      const flags = request.flags | Flags.REQUEST | (ack ? Flags.ACK : 0);
      const message = Buffer.concat(formatMessage({ type: request.type, flags, seq, port: this.port, data: [...request.body] }));
      // Messages of one datagram start at 4-byte boundaries (NLMSG_ALIGN).
      chunks.push(message, PADDING[message.length % 4] ?? PADDING[0]);
      group.push(seq);
      if (ack) {
        this.settles.set(seq, group);
        group = [];
      }
    }
    const seqs = batch.map((entry) => entry.seq);
    this.socket.send(Buffer.concat(chunks), {}, (error) => {
      if (error !== undefined) this.failSeqs(seqs, error);
    });
    this.updateRef();
    this.armWatchdog();
  }

  private receive(data: Buffer): void {
    let messages: NetlinkMessage[];
    try {
      messages = parseMessages(data);
    } catch (error) {
      this.failInFlight(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    for (const message of messages) {
      const entry = this.inFlight.get(message.seq);
      if (entry === undefined) continue; // a late answer to a request that timed out
      if (message.type === NetlinkMessageType.ERROR) {
        const { errno } = parseError(message.data, message.flags);
        if (errno !== 0) this.settle(message.seq, new NetlinkError(errno));
        this.settleGroup(message.seq);
      } else if (message.type === NetlinkMessageType.DONE) {
        // The DONE of a dump carries the dump's own status.
        const status = message.data.length >= 4 ? message.data.readInt32LE(0) : 0;
        if (status < 0) this.settle(message.seq, new NetlinkError(status));
        this.settleGroup(message.seq);
        this.dumping = false;
      } else {
        entry.replies.push(message);
      }
    }
    this.updateRef();
    if (this.head < this.queue.length) this.scheduleFlush();
  }

  /** The ACK or end of `end` arrived: whatever it settles and has not failed succeeded. */
  private settleGroup(end: number): void {
    for (const seq of this.settles.get(end) ?? [end]) this.settle(seq);
    this.settles.delete(end);
  }

  private settle(seq: number, error?: Error): void {
    const entry = this.inFlight.get(seq);
    if (entry === undefined) return;
    this.inFlight.delete(seq);
    if (entry.request.dump) this.dumping = false;
    if (error === undefined) entry.request.resolve(entry.replies);
    else entry.request.reject(error);
  }

  private failSeqs(seqs: readonly number[], error: Error): void {
    for (const seq of seqs) {
      this.settle(seq, error);
      this.settles.delete(seq);
    }
    this.updateRef();
    if (this.head < this.queue.length) this.scheduleFlush();
  }

  private failInFlight(error: Error): void {
    this.failSeqs([...this.inFlight.keys()], error);
  }

  /** One timer for all requests: they are answered in order, so only the oldest can be overdue. */
  private armWatchdog(): void {
    if (this.watchdog !== undefined) return;
    this.watchdog = setInterval(() => {
      const now = Date.now();
      const overdue: number[] = [];
      for (const [seq, entry] of this.inFlight) {
        if (now - entry.sentAt < this.timeoutMs) break;
        overdue.push(seq);
      }
      if (overdue.length > 0) this.failSeqs(overdue, new Error(`no answer from the kernel within ${this.timeoutMs} ms`));
      if (this.inFlight.size === 0 || this.closed) {
        clearInterval(this.watchdog);
        this.watchdog = undefined;
      }
    }, Math.max(10, Math.min(1000, this.timeoutMs / 4)));
    this.watchdog.unref();
  }

  /** The socket keeps the process alive only while requests are unanswered, like a pending timer. */
  private updateRef(): void {
    const wanted = this.inFlight.size > 0 && !this.closed;
    if (wanted === this.referenced || this.closed) return;
    this.referenced = wanted;
    if (wanted) this.socket.ref();
    else this.socket.unref();
  }

  private nextSeq(): number {
    this.seq = this.seq >= 0xffffffff ? 1 : this.seq + 1;
    return this.seq;
  }

  private compactQueue(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

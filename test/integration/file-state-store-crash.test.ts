import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { isBerthError } from '../../plugins/errors/berth-error.js';
import { FileStateStore } from '../../plugins/state/file-state-store.js';
import type { StoredEntry } from '../../plugins/state/state-store.js';

const WRITER = fileURLToPath(new URL('../fixtures/file-state-store-writer.js', import.meta.url));
const ROUNDS = 5;

interface Ack {
  readonly op: 'put' | 'del';
  readonly key: string;
  readonly revision: number;
  readonly token: string | undefined;
}

/** What a key must hold: a value written at a revision, or nothing. */
type Expected = { readonly revision: number; readonly value: string } | null;

describe('FileStateStore under kill -9', function () {
  this.timeout(120_000);

  let dir: string;
  let path: string;
  const children = new Set<ChildProcess>();

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-state-crash-'));
    path = join(dir, 'state.db');
  });

  afterEach(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    children.clear();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps every acknowledged write, and the revision, across repeated SIGKILLs', async () => {
    let model = new Map<string, Expected>();
    for (let round = 0; round < ROUNDS; round++) {
      // Round 0 kills almost at once (around open and the first compaction); later rounds kill mid-stream.
      const killAfter = round === 0 ? 1 + Math.floor(Math.random() * 3) : 20 + Math.floor(Math.random() * 600);
      const delayMs = Math.floor(Math.random() * 25);
      const context = `round ${round}, killed ${delayMs} ms after ack ${killAfter}`;
      const { acks, pid } = await writeUntilKilled(killAfter, delayMs);
      expect(acks.length, context).to.be.at.least(killAfter);

      const staleLock = JSON.parse(await readFile(`${path}.lock`, 'utf8')) as { pid: number };
      expect(staleLock.pid, `${context}: lock left by the killed writer`).to.equal(pid);

      const store = await FileStateStore.open(path);
      const lock = JSON.parse(await readFile(`${path}.lock`, 'utf8')) as { pid: number };
      expect(lock.pid, `${context}: lock taken over`).to.equal(process.pid);

      const lastAck = Math.max(...acks.map((ack) => ack.revision));
      const revisionAtOpen = await store.revision();
      expect(revisionAtOpen, `${context}: revision`).to.be.at.least(lastAck);

      for (const ack of acks) {
        if (ack.key === '/crash/ephemeral') continue; // leased: checked below
        model.set(ack.key, ack.op === 'put' ? { revision: ack.revision, value: valueOf(ack.token ?? '') } : null);
      }
      // The writer is sequential: at most one write was in flight, and if it landed it is newer than every ack.
      const deviations: string[] = [];
      for (const [key, expected] of model) {
        const actual = await store.get(key);
        if (matches(actual, expected)) continue;
        deviations.push(key);
        const explanation = `${context}: ${key} is ${describeEntry(actual)}, acknowledged ${JSON.stringify(expected)}, last ack ${lastAck}`;
        if (actual === undefined) expect(revisionAtOpen, explanation).to.be.greaterThan(lastAck);
        else if (expected === null) expect(actual.createRevision, explanation).to.be.greaterThan(lastAck);
        else expect(actual.modRevision, explanation).to.be.greaterThan(lastAck);
      }
      expect(deviations.length, `${context}: keys differing from their last ack: ${deviations.join(', ')}`).to.be.at.most(1);

      // The writer's lease was never kept alive by anyone else: its key goes within the TTL (1 s) and a bound.
      const deadline = Date.now() + 6000;
      while ((await store.get('/crash/ephemeral')) !== undefined) {
        expect(Date.now(), `${context}: leased key of the killed writer still present`).to.be.lessThan(deadline);
        await sleep(50);
      }

      const after = await store.put('/crash/after', String(round));
      expect(after, `${context}: new write`).to.be.greaterThan(Math.max(lastAck, revisionAtOpen));
      expect(await store.get('/crash/after')).to.deep.include({ value: String(round), modRevision: after });

      // What is in the store now (including a landed in-flight write) is the baseline of the next round.
      model = new Map((await store.list('/crash/k')).entries.map((entry) => [entry.key, { revision: entry.modRevision, value: entry.value }]));
      const counter = await store.get('/crash/counter');
      if (counter !== undefined) model.set('/crash/counter', { revision: counter.modRevision, value: counter.value });
      await store.close();
    }
  });

  it('refuses a file held by a live process and takes the lock over once that process is killed', async () => {
    const child = spawnWriter('hold');
    const pid = await new Promise<number>((resolve, reject) => {
      readLines(child, (line) => {
        const match = /^ready (\d+)$/.exec(line);
        if (match) resolve(Number(match[1]));
      });
      child.once('exit', (code, signal) => reject(new Error(`holder exited early (${code ?? signal}): ${stderrOf(child)}`)));
    });
    expect(pid).to.equal(child.pid);

    try {
      await FileStateStore.open(path);
      expect.fail('a second process opened a file that is in use');
    } catch (error) {
      expect(isBerthError(error, 'ERR_STATE_UNAVAILABLE'), String(error)).to.equal(true);
      expect((error as Error).message).to.include(path).and.include(String(pid));
    }

    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const store = await FileStateStore.open(path);
    expect((JSON.parse(await readFile(`${path}.lock`, 'utf8')) as { pid: number }).pid).to.equal(process.pid);
    expect(await store.put('/after', 'x')).to.be.greaterThan(0);
    await store.close();
  });

  /** Runs the writer, SIGKILLs it `delayMs` after its `killAfter`-th acknowledgement, returns what it acknowledged. */
  function writeUntilKilled(killAfter: number, delayMs: number): Promise<{ acks: Ack[]; pid: number }> {
    const child = spawnWriter('write');
    const acks: Ack[] = [];
    let killing = false;
    return new Promise((resolve, reject) => {
      const guard = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`writer did not reach ${killAfter} acknowledgements in 30 s: ${stderrOf(child)}`));
      }, 30_000);
      readLines(child, (line) => {
        const [op, key, revision, token] = line.split(' ');
        if ((op !== 'put' && op !== 'del') || key === undefined || revision === undefined) return;
        acks.push({ op, key, revision: Number(revision), token });
        if (!killing && acks.length >= killAfter) {
          killing = true;
          setTimeout(() => child.kill('SIGKILL'), delayMs);
        }
      });
      child.once('close', (code, signal) => {
        clearTimeout(guard);
        if (signal !== 'SIGKILL' || child.pid === undefined) {
          reject(new Error(`writer exited with ${code ?? signal} instead of being killed: ${stderrOf(child)}`));
        } else {
          resolve({ acks, pid: child.pid });
        }
      });
    });
  }

  function spawnWriter(mode: 'write' | 'hold'): ChildProcess {
    const child = spawn(process.execPath, ['--enable-source-maps', WRITER, mode, path], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    const stderr: string[] = [];
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
    stderrs.set(child, stderr);
    return child;
  }
});

const stderrs = new WeakMap<ChildProcess, string[]>();

function stderrOf(child: ChildProcess): string {
  return (stderrs.get(child) ?? []).join('').trim() || '(no stderr)';
}

function readLines(child: ChildProcess, onLine: (line: string) => void): void {
  let buffered = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      onLine(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
    }
  });
}

function valueOf(token: string): string {
  return `${token}|${'y'.repeat(Number(token.split(':')[1]))}`;
}

function matches(actual: StoredEntry | undefined, expected: Expected | undefined): boolean {
  if (expected === null || expected === undefined) return actual === undefined;
  return actual !== undefined && actual.modRevision === expected.revision && actual.value === expected.value;
}

function describeEntry(entry: StoredEntry | undefined): string {
  return entry === undefined ? 'absent' : `at revision ${entry.modRevision} (created ${entry.createRevision})`;
}

import type { Engine, EngineContainer, EngineInfo, ExecResult } from '../../plugins/engine/engine.js';
import { BerthError } from '../../plugins/errors/berth-error.js';

/**
 * Stand-in for the engine API in unit tests only (the e2e tier drives a real engine). Tests
 * set the containers it reports and may hook the moment it is asked, to stage races.
 */
export class FakeEngine implements Engine {
  readonly endpoint = 'fake://engine';
  containers: EngineContainer[] = [];
  reachable = true;
  onList: (() => Promise<void>) | undefined;
  listCalls = 0;

  async info(): Promise<EngineInfo> {
    if (!this.reachable) throw new Error('engine unreachable');
    return { version: 'fake', apiVersion: '1.41' };
  }

  async listContainers(): Promise<readonly EngineContainer[]> {
    this.listCalls++;
    if (!this.reachable) {
      throw new BerthError('ERR_ENGINE_UNAVAILABLE', 'engine unreachable');
    }
    await this.onList?.();
    return this.containers;
  }

  readonly stopped: string[] = [];
  readonly started: string[] = [];

  async stopContainer(id: string): Promise<void> {
    this.stopped.push(id);
    this.containers = this.containers.map((container) => (container.id === id ? { ...container, state: 'exited' } : container));
    await this.onStop?.(id);
  }

  onStop: ((id: string) => Promise<void>) | undefined;

  async startContainer(id: string): Promise<void> {
    this.started.push(id);
    this.containers = this.containers.map((container) => (container.id === id ? { ...container, state: 'running' } : container));
  }

  readonly events: string[] = [];
  execResult: ExecResult = { exitCode: 0, output: '' };

  async pauseContainer(id: string): Promise<void> {
    this.events.push(`pause ${id}`);
  }

  async unpauseContainer(id: string): Promise<void> {
    this.events.push(`unpause ${id}`);
  }

  async exec(id: string, command: readonly string[]): Promise<ExecResult> {
    this.events.push(`exec ${id} ${command.join(' ')}`);
    return this.execResult;
  }
}

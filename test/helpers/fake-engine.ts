import type { Engine, EngineContainer, EngineInfo } from '../../plugins/engine/engine.js';
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
}

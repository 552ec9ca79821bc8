import { BerthError } from '../plugins/errors/berth-error.js';

/** Docker's volume name rule; the first character excludes `.` so `.` and `..` can never pass. */
const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const MAX_NAME_BYTES = 255;

/** Validates before the name touches the filesystem or the store. */
export function validateVolumeName(name: string): string {
  return validateName('volume', name);
}

/** Snapshot names follow the volume rule: they become directory names too. */
export function validateSnapshotName(name: string): string {
  return validateName('snapshot', name);
}

export function isValidVolumeName(name: string): boolean {
  return Buffer.byteLength(name, 'utf8') <= MAX_NAME_BYTES && NAME_PATTERN.test(name);
}

function validateName(kind: string, name: string): string {
  if (name.length === 0) throw new BerthError('ERR_INVALID_NAME', `${kind} name is empty`);
  if (Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) {
    throw new BerthError('ERR_INVALID_NAME', `${kind} name is longer than ${MAX_NAME_BYTES} bytes`);
  }
  if (!NAME_PATTERN.test(name)) {
    throw new BerthError('ERR_INVALID_NAME', `${kind} name ${JSON.stringify(name)} is invalid: use [a-zA-Z0-9][a-zA-Z0-9_.-]* (no "/", "..", spaces or control characters)`);
  }
  return name;
}

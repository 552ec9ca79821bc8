import { runTool, execTool, toolError } from '../../plugins/util/run-tool.js';

const VANISHED = /No such file or directory$/;

/** `cp -a` keeps owners, modes, times, symlinks, hard links within the tree, ACLs and xattrs; reflinks where possible. */
export async function copyTree(from: string, to: string, what: string): Promise<void> {
  await runTool(copyCommand(from, to), what);
}

/**
 * copyTree of a tree that containers may be writing: entries deleted while cp walks are missing
 * from the copy (they are gone from the tree too), any other failure fails the copy. cp reports
 * vanished entries and exits 1 after copying everything else.
 */
export async function copyLiveTree(from: string, to: string, what: string): Promise<void> {
  const command = copyCommand(from, to);
  const result = await execTool(command, what);
  if (result.code === 0) return;
  const complaints = result.stderr.split('\n').filter((line) => line.trim() !== '');
  if (result.code === 1 && complaints.length > 0 && complaints.every((line) => VANISHED.test(line))) return;
  throw toolError(command, what, result);
}

function copyCommand(from: string, to: string): string[] {
  return ['cp', '-a', '--reflink=auto', '--no-target-directory', '--', from, to];
}

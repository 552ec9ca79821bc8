import { isAbsolute } from 'node:path';
import { BerthError } from '../../plugins/errors/berth-error.js';
import type { AdminRequest, AdminRoute } from '../../plugins/server/admin-app.js';
import type { BackupService } from './backup-service.js';
import type { Compression } from './codec/compression.js';
import { DirectoryBackupTarget } from './directory-backup-target.js';
import type { BackupManifest } from './backup-manifest.js';

export function createBackupAdminRoutes(backups: BackupService): AdminRoute[] {
  return [
    {
      method: 'POST',
      path: '/v1/backups',
      streaming: true,
      handler: async (request) => {
        const result = await backups.create({
          volume: requiredString(request, 'volume'),
          target: target(request, 'to'),
          ...optional(request, 'key', 'keyPath'),
          ...(typeof request.body.compression === 'string' ? { compression: request.body.compression as Compression } : {}),
          full: request.body.full === true,
          ...(request.body.keepLast !== undefined ? { keepLast: Number(request.body.keepLast) } : {}),
          onProgress: (phase, doneBytes, totalBytes) => request.progress({ phase, ...(doneBytes !== undefined ? { doneBytes } : {}), ...(totalBytes !== undefined ? { totalBytes } : {}) }),
        });
        return { backup: summary(result.manifest), removedByRetention: result.removedByRetention, skipped: result.skipped, warnings: result.warnings };
      },
    },
    {
      method: 'GET',
      path: '/v1/backups',
      handler: async (request) => {
        const listed = await backups.list(target(request, 'target', request.query), request.query.volume || undefined);
        return { backups: listed.map((entry) => ('manifest' in entry ? summary(entry.manifest) : { volume: entry.volume, id: entry.id, damaged: entry.damaged })) };
      },
    },
    {
      method: 'POST',
      path: '/v1/backups/verify',
      streaming: true,
      handler: async (request) =>
        backups.verify(target(request, 'target'), requiredString(request, 'volume'), requiredString(request, 'id'), optionalString(request, 'key'), (phase, doneBytes, totalBytes) =>
          request.progress({ phase, ...(doneBytes !== undefined ? { doneBytes } : {}), ...(totalBytes !== undefined ? { totalBytes } : {}) }),
        ),
    },
    {
      method: 'POST',
      path: '/v1/backups/restore',
      streaming: true,
      handler: async (request) =>
        backups.restore({
          target: target(request, 'target'),
          volume: requiredString(request, 'volume'),
          id: requiredString(request, 'id'),
          to: requiredString(request, 'to'),
          ...optional(request, 'key', 'keyPath'),
          allowEscapingSymlinks: request.body.allowEscapingSymlinks === true,
          onProgress: (phase, doneBytes, totalBytes) => request.progress({ phase, ...(doneBytes !== undefined ? { doneBytes } : {}), ...(totalBytes !== undefined ? { totalBytes } : {}) }),
        }),
    },
  ];
}

/** What `berth backup ls` and the results show of a backup. */
export function summary(manifest: BackupManifest) {
  return {
    volume: manifest.volume,
    id: manifest.id,
    kind: manifest.kind,
    parent: manifest.parent ?? null,
    createdAt: manifest.createdAt,
    compression: manifest.compression,
    encrypted: manifest.encryption !== undefined,
    keyId: manifest.encryption?.keyId ?? null,
    ...manifest.stats,
  };
}

function requiredString(request: AdminRequest, field: string): string {
  const value = request.body[field];
  if (typeof value !== 'string' || value === '') throw new BerthError('ERR_INVALID_REQUEST', `request has no ${field}`);
  return value;
}

function optionalString(request: AdminRequest, field: string): string | undefined {
  const value = request.body[field];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function optional(request: AdminRequest, field: string, as: string): Record<string, string> {
  const value = optionalString(request, field);
  return value === undefined ? {} : { [as]: value };
}

function target(request: AdminRequest, field: string, source: Record<string, unknown> = request.body): DirectoryBackupTarget {
  const value = source[field];
  if (typeof value !== 'string' || !isAbsolute(value)) throw new BerthError('ERR_INVALID_REQUEST', `backup directory (${field}) must be an absolute path, got ${JSON.stringify(value ?? '')}`);
  return new DirectoryBackupTarget(value);
}

import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { BerthError } from '../errors/berth-error.js';

/**
 * Reads the whole body (ignoring Content-Type), enforces a size limit, and leaves a plain
 * object in `request.body`: empty and `null` bodies become `{}`; anything else that is not
 * a JSON object is refused as malformed.
 */
export function readJsonBody(limitBytes: number): RequestHandler {
  return (request: Request, _response: Response, next: NextFunction) => {
    const declared = Number(request.headers['content-length'] ?? '0');
    if (declared > limitBytes) return next(tooLarge(limitBytes));
    const chunks: Buffer[] = [];
    let received = 0;
    let failed = false;
    request.on('data', (chunk: Buffer) => {
      if (failed) return;
      received += chunk.length;
      if (received > limitBytes) {
        failed = true;
        request.resume();
        next(tooLarge(limitBytes));
        return;
      }
      chunks.push(chunk);
    });
    request.once('error', (error) => {
      if (!failed) {
        failed = true;
        next(new BerthError('ERR_INVALID_REQUEST', `request body could not be read: ${error.message}`, { cause: error }));
      }
    });
    request.once('end', () => {
      if (failed) return;
      try {
        request.body = parseBody(Buffer.concat(chunks).toString('utf8'));
        next();
      } catch (error) {
        next(error);
      }
    });
  };
}

export function parseBody(text: string): Record<string, unknown> {
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new BerthError('ERR_INVALID_REQUEST', `malformed JSON body: ${(error as Error).message}`, { details: { malformedBody: true } });
  }
  if (value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new BerthError('ERR_INVALID_REQUEST', 'malformed JSON body: expected an object', { details: { malformedBody: true } });
  }
  return value as Record<string, unknown>;
}

function tooLarge(limitBytes: number): BerthError {
  return new BerthError('ERR_INVALID_REQUEST', `request body exceeds the ${limitBytes}-byte limit`, { details: { status: 413 } });
}

/**
 * The document layout shared by the registry and the validation of updates:
 * the name of the root map, the form of a segment key, and who owns a segment.
 */

/** Name of the root Y.Map that holds every segment. */
export const ROOT = 'segments'
/** `<owner>/<generation>`: the owner's id, then `<time base36>.<random hex>` (see newSegmentKey in registry.ts). */
export const SEGMENT_KEY = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})\/([0-9a-z]{1,16}\.[0-9a-f]{1,16})$/

/** The owner id at the front of a segment key. */
export const ownerOf = (segmentKey: string): string => segmentKey.slice(0, segmentKey.indexOf('/'))

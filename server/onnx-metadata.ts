// Reads the metadata_props of an ONNX file. onnxruntime-node's InferenceSession exposes input and
// output metadata but not the model's custom metadata map, so the bundle loader reads it from the
// protobuf itself. Only the top level of ModelProto is walked, seeking over the graph, so even a
// large model costs a few small reads.
import { open, type FileHandle } from 'node:fs/promises';

const METADATA_PROPS = 14; // ModelProto.metadata_props: repeated StringStringEntryProto
const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;
/** A metadata entry larger than this is not a manifest; refusing it bounds memory. */
const MAX_ENTRY_BYTES = 16 * 1024 * 1024;

interface Varint { value: number; size: number }

function readVarint(buf: Uint8Array, at: number): Varint | undefined {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 10 && at + i < buf.length; i++) {
    const b = buf[at + i] ?? 0;
    value += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return { value, size: i + 1 };
  }
  return undefined;
}

/** Parses one StringStringEntryProto (key = field 1, value = field 2). */
function parseEntry(buf: Uint8Array): [string, string] {
  let key = '';
  let value = '';
  let at = 0;
  const text = new TextDecoder('utf-8', { fatal: false });
  while (at < buf.length) {
    const tag = readVarint(buf, at);
    if (!tag) break;
    at += tag.size;
    if ((tag.value & 7) !== WIRE_LEN) break;
    const len = readVarint(buf, at);
    if (!len) break;
    at += len.size;
    const s = text.decode(buf.subarray(at, at + len.value));
    at += len.value;
    if (tag.value >>> 3 === 1) key = s;
    else if (tag.value >>> 3 === 2) value = s;
  }
  return [key, value];
}

async function readAt(fh: FileHandle, pos: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  const { bytesRead } = await fh.read(buf, 0, len, pos);
  return buf.subarray(0, bytesRead);
}

/**
 * Returns the model's metadata_props as a map. Throws when the file is not a well-formed
 * protobuf at the top level.
 */
export async function readOnnxMetadata(path: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let pos = 0;
    while (pos < size) {
      const head = await readAt(fh, pos, 20);
      const tag = readVarint(head, 0);
      if (!tag || tag.value === 0) throw new Error(`${path}: malformed protobuf tag at byte ${pos}`);
      const field = Math.floor(tag.value / 8);
      const wire = tag.value & 7;
      let next = pos + tag.size;
      if (wire === WIRE_VARINT) {
        const v = readVarint(head, tag.size);
        if (!v) throw new Error(`${path}: malformed varint at byte ${pos}`);
        next += v.size;
      } else if (wire === WIRE_I64) {
        next += 8;
      } else if (wire === WIRE_I32) {
        next += 4;
      } else if (wire === WIRE_LEN) {
        const len = readVarint(head, tag.size);
        if (!len) throw new Error(`${path}: malformed length at byte ${pos}`);
        const start = next + len.size;
        next = start + len.value;
        if (next > size) throw new Error(`${path}: field ${field} runs past the end of the file`);
        if (field === METADATA_PROPS) {
          if (len.value > MAX_ENTRY_BYTES) throw new Error(`${path}: metadata entry of ${len.value} bytes`);
          const [k, v] = parseEntry(await readAt(fh, start, len.value));
          out.set(k, v);
        }
      } else {
        throw new Error(`${path}: unsupported protobuf wire type ${wire} at byte ${pos}`);
      }
      pos = next;
    }
  } finally {
    await fh.close();
  }
  return out;
}

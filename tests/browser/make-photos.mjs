// Writes the journey's inputs into DIR with nothing but Node: two small
// "old photos" (PNG, faded and scratched, deterministic) and a text file named
// like a JPEG. Prints the PHOTOS and BAD_FILE values for journey.mjs.
//
//   node make-photos.mjs /tmp/journey-in

import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const dir = path.resolve(process.argv[2] || 'artifacts/photos');
fs.mkdirSync(dir, { recursive: true });

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

/** An RGB PNG of width × height whose pixels come from paint(x, y) → [r, g, b]. */
function png(width, height, paint) {
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x += 1) {
      const [r, g, b] = paint(x, y);
      rows[row + 1 + x * 3] = r;
      rows[row + 2 + x * 3] = g;
      rows[row + 3 + x * 3] = b;
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A faded, sepia-cast scene with blobs, vertical scratches and dust. */
function oldPhoto(width, height, seed) {
  let state = seed >>> 0;
  const random = () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  const blobs = Array.from({ length: 9 }, () =>
    ({ x: random() * width, y: random() * height, r: 10 + random() * width / 4, v: 50 + random() * 160 }));
  const scratches = Array.from({ length: 7 }, () => Math.floor(random() * width));
  const clamp = (v) => Math.max(0, Math.min(255, Math.round(v)));
  return png(width, height, (x, y) => {
    let v = 90 + 80 * (y / height);
    for (const b of blobs) if ((x - b.x) ** 2 + (y - b.y) ** 2 < b.r ** 2) v = b.v;
    v += (random() - 0.5) * 24; // grain
    if (scratches.includes(x)) v = 235;
    if (random() < 0.004) v = 250; // dust
    // Faded and yellowed: low contrast, a warm cast.
    const faded = 60 + v * 0.6;
    return [clamp(faded * 1.08 + 12), clamp(faded * 0.98), clamp(faded * 0.78)];
  });
}

const photos = [
  ['grandma.png', oldPhoto(192, 144, 7)],
  ['wedding-1962.png', oldPhoto(144, 192, 1962)],
];
const paths = photos.map(([name, bytes]) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return file;
});
const bad = path.join(dir, 'notes.jpg');
fs.writeFileSync(bad, 'These are notes about the photos, not a photo.\n'.repeat(40));

console.log(`PHOTOS=${paths.join(':')}`);
console.log(`BAD_FILE=${bad}`);

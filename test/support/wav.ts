// WAV files for client tests: float samples written as 16-bit mono PCM.
import wavefile from 'wavefile';

export function wavFile(samples: Float32Array, rate = 16000): Buffer {
  const w = new wavefile.WaveFile();
  w.fromScratch(1, rate, '16', Array.from(samples, (v) => Math.max(-32768, Math.min(32767, Math.round(v * 32767)))));
  return Buffer.from(w.toBuffer());
}

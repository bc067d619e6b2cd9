/**
 * Fitting an AI reply into one chat message. The chat refuses a msg_content
 * longer than chat.maxContentLength, counted as the send validation counts it
 * (joi `string().max()`: UTF-16 code units, i.e. String.length). A longer reply
 * is cut and ends with a visible marker, so the patient sees that there was
 * more; the full reply stays in the record's response_content.
 */

/** How far before the cut a grapheme-cluster boundary is looked for (code units). */
const LOOKBACK = 64;
/** What the segmenter sees after the cut (enough to know whether the cut is a boundary). */
const LOOKAHEAD = 16;

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

export interface FittedReply {
  /** What is posted: the reply itself, or its beginning followed by the marker. */
  content: string;
  /** True when the reply was longer than the limit and was cut. */
  truncated: boolean;
}

const isHigh = (u: number): boolean => u >= 0xd800 && u <= 0xdbff;
const isLow = (u: number): boolean => u >= 0xdc00 && u <= 0xdfff;
/** A regional indicator (half of a flag emoji, U+1F1E6..U+1F1FF) starts at i. */
const isRegionalIndicator = (s: string, i: number): boolean => s.charCodeAt(i) === 0xd83c && s.charCodeAt(i + 1) >= 0xdde6 && s.charCodeAt(i + 1) <= 0xddff;

/**
 * `reply` as it is when it fits in `maxLength` code units; otherwise its
 * beginning, cut at most `maxLength - marker.length` code units in, followed
 * by `marker`. The cut never falls inside a surrogate pair, and not inside a
 * grapheme cluster (an emoji sequence, a flag, a letter and its accents) unless
 * that cluster is longer than LOOKBACK; so the result is `maxLength` long or a
 * little shorter. Deterministic: a retried attempt with the same reply posts
 * the same text. A marker that does not leave room for one code unit of the
 * reply is not used (configuration prevents it: see the ai-router plugin).
 */
export function fitReply(reply: string, maxLength: number, marker: string): FittedReply {
  if (reply.length <= maxLength) return { content: reply, truncated: false };
  const mark = marker.length < maxLength ? marker : '';
  return { content: reply.slice(0, cutIndex(reply, maxLength - mark.length)) + mark, truncated: true };
}

/** The largest index <= room where `text` (longer than room) may be cut. */
function cutIndex(text: string, room: number): number {
  // A code-point boundary first: never half a surrogate pair.
  const cut = room > 0 && isHigh(text.charCodeAt(room - 1)) && isLow(text.charCodeAt(room)) ? room - 1 : room;
  if (cut === 0) return 0;
  // Then the last grapheme-cluster boundary at or before it, found in a short window (segmenting
  // the whole reply costs more than linear time). The window starts on a code-point boundary and
  // at an even place in a run of regional indicators, so flags are paired as in the whole text.
  let from = Math.max(0, cut - LOOKBACK);
  if (from > 0 && isLow(text.charCodeAt(from)) && isHigh(text.charCodeAt(from - 1))) from--;
  let before = 0;
  while (from - 2 * (before + 1) >= 0 && isRegionalIndicator(text, from - 2 * (before + 1))) before++;
  if (before % 2 === 1) from -= 2;
  let best = -1;
  for (const { index } of graphemes.segment(text.slice(from, cut + LOOKAHEAD))) {
    if (from + index > cut) break;
    // The window's own start is a boundary only where the text starts.
    if (index > 0 || from === 0) best = from + index;
  }
  // No boundary in the window but its start (one cluster longer than it): the code-point cut.
  return best > 0 ? best : cut;
}

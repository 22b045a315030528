/*
 * The byte loops of the DATA paths (src/smtp/dot.ts), where JavaScript cost 2.5-5 ms per MB
 * on this machine, a third of the daemon's CPU for 1 MB messages.
 *
 * dotEncode(input, output, state): SMTP transparency for the upstream (RFC 5321 4.5.2), the
 * loop of DotEncoder. Every bare LF and bare CR becomes CRLF, a dot at the start of a line
 * is doubled. `state` is an Int32Array of 2: [0] the flags carried from one call to the next
 * (bit 0: at the start of a line; bit 1: a CR was the last byte, its LF may come in the next
 * input), updated; [1] set to the number of dots added by this call. `output` must hold
 * 2 * input.length + 2 bytes. Returns how many bytes were written to `output`.
 *
 * findCrlfDot(input, from): the index of the first CR LF '.' at or after `from`, or -1: what
 * DotDecoder looks for in the middle of the data.
 *
 * Both look at 16 bytes at a time with SSE2 (every x86-64 CPU has it; elsewhere a byte
 * loop): memchr, used before, is vectorised too, but it was called once or twice per line,
 * and on 80-byte lines its call and set-up cost more than the search (issue 7: memchr was
 * 5-7% of the daemon's samples for 1 MB messages).
 */
#include <node_api.h>
#include <stddef.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "addon.h"

/* The first CR or LF at or after i, or len. */
static size_t line_break(const unsigned char *p, size_t i, size_t len) {
#ifdef __SSE2__
  const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
  for (; i + 16 <= len; i += 16) {
    __m128i a = _mm_loadu_si128((const __m128i *)(p + i));
    int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(a, cr), _mm_cmpeq_epi8(a, lf)));
    if (mask != 0) return i + (size_t)__builtin_ctz((unsigned)mask);
  }
#endif
  for (; i < len; i++)
    if (p[i] == '\r' || p[i] == '\n') return i;
  return len;
}

/* The first CR LF '.' at or after i, or -1. */
ptrdiff_t dot_crlf_dot(const unsigned char *p, size_t i, size_t len) {
#ifdef __SSE2__
  const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'), dot = _mm_set1_epi8('.');
  /* Three loads, one byte apart: a bit is set only where all three bytes match. */
  for (; i + 18 <= len; i += 16) {
    __m128i a = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), cr);
    __m128i b = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 1)), lf);
    __m128i c = _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i + 2)), dot);
    int mask = _mm_movemask_epi8(_mm_and_si128(_mm_and_si128(a, b), c));
    if (mask != 0) return (ptrdiff_t)(i + (size_t)__builtin_ctz((unsigned)mask));
  }
#endif
  for (; i + 2 < len; i++)
    if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '.') return (ptrdiff_t)i;
  return -1;
}

size_t dot_encode(const unsigned char *in, size_t len, unsigned char *out, int32_t *flags, int32_t *stuffed) {
  size_t i = 0, o = 0;
  int line_start = *flags & DOT_LINE_START;
  int32_t dots = 0;
  if ((*flags & DOT_PENDING_CR) && len > 0) {
    out[o++] = '\r';
    out[o++] = '\n';
    line_start = 1;
    if (in[0] == '\n') i = 1;
  } else if (*flags & DOT_PENDING_CR) {
    *stuffed = 0;
    return 0; /* nothing new: the CR still waits */
  }
  int pending_cr = 0;
  while (i < len) {
    if (line_start) {
      if (in[i] == '.') {
        out[o++] = '.';
        dots++;
      }
      line_start = 0;
    }
    size_t j = line_break(in, i, len);
    memcpy(out + o, in + i, j - i);
    o += j - i;
    i = j;
    if (i == len) break;
    if (in[i] == '\r' && i + 1 == len) {
      pending_cr = 1; /* CRLF or bare CR: the next input tells */
      i++;
      break;
    }
    /* A CRLF, a bare CR or a bare LF: all end the line with CRLF. */
    i += (in[i] == '\r' && in[i + 1] == '\n') ? 2 : 1;
    out[o++] = '\r';
    out[o++] = '\n';
    line_start = 1;
  }
  *flags = (line_start ? DOT_LINE_START : 0) | (pending_cr ? DOT_PENDING_CR : 0);
  *stuffed = dots;
  return o;
}

static napi_value DotEncode(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  void *in, *out, *state;
  size_t in_len, out_len, state_len;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3 || napi_get_buffer_info(env, argv[0], &in, &in_len) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &out, &out_len) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &type, &state_len, &state, &ab, &offset) != napi_ok ||
      type != napi_int32_array || state_len < 2) {
    napi_throw_type_error(env, NULL, "dotEncode(input: Buffer, output: Buffer, state: Int32Array(2))");
    return NULL;
  }
  if (out_len < 2 * in_len + 2) {
    napi_throw_range_error(env, NULL, "dotEncode: output must hold 2 * input.length + 2 bytes");
    return NULL;
  }
  int32_t *s = state;
  size_t n = dot_encode(in, in_len, out, &s[0], &s[1]);
  napi_value result;
  napi_create_double(env, (double)n, &result);
  return result;
}

static napi_value FindCrlfDot(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *in;
  size_t in_len;
  double from;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 2 || napi_get_buffer_info(env, argv[0], &in, &in_len) != napi_ok ||
      napi_get_value_double(env, argv[1], &from) != napi_ok || !(from >= 0)) {
    napi_throw_type_error(env, NULL, "findCrlfDot(input: Buffer, from: number >= 0)");
    return NULL;
  }
  ptrdiff_t at = from >= (double)in_len ? -1 : dot_crlf_dot(in, (size_t)from, in_len);
  napi_value result;
  napi_create_double(env, (double)at, &result);
  return result;
}

void register_dot(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "dotEncode", NAPI_AUTO_LENGTH, DotEncode, NULL, &fn);
  napi_set_named_property(env, exports, "dotEncode", fn);
  napi_create_function(env, "findCrlfDot", NAPI_AUTO_LENGTH, FindCrlfDot, NULL, &fn);
  napi_set_named_property(env, exports, "findCrlfDot", fn);
}

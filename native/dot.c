/*
 * dotEncode(input, output, state): SMTP transparency for the upstream (RFC 5321 4.5.2), the
 * byte loop of DotEncoder (src/smtp/dot.ts). In JavaScript it cost 2.5-5 ms per MB on
 * this machine, a third of the daemon's CPU for 1 MB messages; here memchr finds the line
 * ends.
 *
 * Every bare LF and bare CR becomes CRLF, a dot at the start of a line is doubled. `state`
 * is an Int32Array of 2: [0] the flags carried from one call to the next (bit 0: at the
 * start of a line; bit 1: a CR was the last byte, its LF may come in the next input),
 * updated; [1] set to the number of dots added by this call. `output` must hold
 * 2 * input.length + 2 bytes. Returns how many bytes were written to `output`.
 */
#include <node_api.h>
#include <string.h>

#define LINE_START 1
#define PENDING_CR 2

static size_t encode(const unsigned char *in, size_t len, unsigned char *out, int32_t *flags, int32_t *stuffed) {
  size_t i = 0, o = 0;
  int line_start = *flags & LINE_START;
  int32_t dots = 0;
  if ((*flags & PENDING_CR) && len > 0) {
    out[o++] = '\r';
    out[o++] = '\n';
    line_start = 1;
    if (in[0] == '\n') i = 1;
  } else if (*flags & PENDING_CR) {
    *stuffed = 0;
    return 0; /* nothing new: the CR still waits */
  }
  int pending_cr = 0;
  /* The next LF at or after i (len: none), found with memchr, which is vectorised: most
   * lines then cost two memchr calls and one memcpy. Kept between lines so that a line of
   * many bare CRs is not searched again for each of them. */
  size_t next_lf = 0;
  int lf_known = 0;
  while (i < len) {
    if (line_start) {
      if (in[i] == '.') {
        out[o++] = '.';
        dots++;
      }
      line_start = 0;
    }
    if (!lf_known || next_lf < i) {
      const unsigned char *lf = memchr(in + i, '\n', len - i);
      next_lf = lf ? (size_t)(lf - in) : len;
      lf_known = 1;
    }
    const unsigned char *cr = memchr(in + i, '\r', next_lf - i);
    size_t j = cr ? (size_t)(cr - in) : next_lf;
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
  *flags = (line_start ? LINE_START : 0) | (pending_cr ? PENDING_CR : 0);
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
  size_t n = encode(in, in_len, out, &s[0], &s[1]);
  napi_value result;
  napi_create_double(env, (double)n, &result);
  return result;
}

void register_dot(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "dotEncode", NAPI_AUTO_LENGTH, DotEncode, NULL, &fn);
  napi_set_named_property(env, exports, "dotEncode", fn);
}

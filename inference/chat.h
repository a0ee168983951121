/* chat.h: chat prompt formats of the supported model families (no Jinja).
 *
 * The format is recognised from tokenizer.chat_template by markers that only that
 * format uses ("<start_of_turn>" Gemma, "<|start_header_id|>" Llama 3, "<|im_start|>"
 * ChatML (SmolLM), "[INST]" Llama 2). Files without a template (like the default
 * Gemma 3 270M GGUF) are recognised by the same markers among the vocabulary's
 * tokens. The rendered text does not start with BOS: tokenize it with add_special
 * (the vocabulary's add_bos rule) and parse_special (so the markers become their
 * control tokens). */
#ifndef INFER_CHAT_H
#define INFER_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

enum infer_chat_format {
    INFER_CHAT_NONE = 0,
    INFER_CHAT_LLAMA2 = 1,
    INFER_CHAT_LLAMA3 = 2,
    INFER_CHAT_GEMMA = 3,
    INFER_CHAT_CHATML = 4
};

typedef struct infer_chat_msg {
    const char *role;      /* "system", "user" or "assistant" */
    const char *content;
} infer_chat_msg;

/* The format of a model file, INFER_CHAT_NONE if none is recognised. */
int infer_chat_detect(const infer_gguf *g);
/* The format whose markers a template text contains, INFER_CHAT_NONE if none. */
int infer_chat_detect_template(const char *tmpl, size_t len);
const char *infer_chat_format_name(int fmt);   /* "gemma", ...; "none" */
/* The format called name ("gemma", "llama3", "llama2", "chatml"), INFER_CHAT_NONE if none. */
int infer_chat_format_by_name(const char *name);

/* Render a conversation. add_assistant opens the assistant's turn for generation.
 * Returns the full length (like snprintf: buf gets at most len-1 bytes and a NUL),
 * or -1 for an unknown format or role (message in err). Gemma has no system role:
 * a system message is put before the first user message, as its template does. */
long infer_chat_render(int fmt, const infer_chat_msg *msgs, int n, bool add_assistant,
                       char *buf, size_t len, char *err, size_t errlen);

/* Text that ends an assistant turn in this format (a stop string), or NULL. */
const char *infer_chat_end_of_turn(int fmt);

#ifdef __cplusplus
}
#endif
#endif

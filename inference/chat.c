/* chat.c: chat format detection and rendering (chat.h). */
#include "chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    int fmt;
    const char *marker;   /* in the template, or as a vocabulary token */
    const char *name;
} formats[] = {
    /* Order matters for templates mentioning several markers: most specific first. */
    { INFER_CHAT_GEMMA, "<start_of_turn>", "gemma" },
    { INFER_CHAT_LLAMA3, "<|start_header_id|>", "llama3" },
    { INFER_CHAT_CHATML, "<|im_start|>", "chatml" },
    { INFER_CHAT_LLAMA2, "[INST]", "llama2" },
};
#define N_FORMATS (int)(sizeof formats / sizeof *formats)

static bool contains(const char *s, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(s + i, needle, m) == 0)
            return true;
    return false;
}

int infer_chat_detect_template(const char *tmpl, size_t len)
{
    for (int i = 0; i < N_FORMATS; i++)
        if (contains(tmpl, len, formats[i].marker))
            return formats[i].fmt;
    return INFER_CHAT_NONE;
}

int infer_chat_detect(const infer_gguf *g)
{
    infer_gguf_str t;
    if (infer_gguf_get_str(g, "tokenizer.chat_template", &t) == INFER_OK) {
        int f = infer_chat_detect_template(t.ptr, (size_t)t.len);
        if (f != INFER_CHAT_NONE)
            return f;
    }
    infer_gguf_arr toks;
    if (infer_gguf_get_arr(g, "tokenizer.ggml.tokens", &toks) != INFER_OK ||
        toks.type != INFER_GGUF_STRING)
        return INFER_CHAT_NONE;
    /* "[INST]" is plain text in Llama 2's vocabulary, so only the others qualify. */
    for (int i = 0; i < N_FORMATS; i++) {
        if (formats[i].fmt == INFER_CHAT_LLAMA2)
            continue;
        size_t ml = strlen(formats[i].marker);
        for (uint64_t j = 0; j < toks.n; j++)
            if (toks.strs[j].len == ml && memcmp(toks.strs[j].ptr, formats[i].marker, ml) == 0)
                return formats[i].fmt;
    }
    return INFER_CHAT_NONE;
}

const char *infer_chat_format_name(int fmt)
{
    for (int i = 0; i < N_FORMATS; i++)
        if (formats[i].fmt == fmt)
            return formats[i].name;
    return "none";
}

int infer_chat_format_by_name(const char *name)
{
    for (int i = 0; i < N_FORMATS; i++)
        if (!strcmp(formats[i].name, name))
            return formats[i].fmt;
    return INFER_CHAT_NONE;
}

const char *infer_chat_end_of_turn(int fmt)
{
    switch (fmt) {
    case INFER_CHAT_GEMMA: return "<end_of_turn>";
    case INFER_CHAT_LLAMA3: return "<|eot_id|>";
    case INFER_CHAT_CHATML: return "<|im_end|>";
    case INFER_CHAT_LLAMA2: return "</s>";
    default: return NULL;
    }
}

/* Appending writer with snprintf semantics over the whole output. */
typedef struct out {
    char *buf;
    size_t cap, len;
} out;

static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

long infer_chat_render(int fmt, const infer_chat_msg *msgs, int n, bool add_assistant,
                       char *buf, size_t len, char *err, size_t errlen)
{
    out o = { buf, len, 0 };
    if (buf && len)
        buf[0] = 0;
    const char *system = NULL;
    for (int i = 0; i < n; i++) {
        const char *r = msgs[i].role, *c = msgs[i].content ? msgs[i].content : "";
        bool sys = !strcmp(r, "system"), user = !strcmp(r, "user");
        bool asst = !strcmp(r, "assistant");
        if (!sys && !user && !asst) {
            snprintf(err, errlen, "chat: message %d has role '%s' (expected system, user or "
                     "assistant)", i, r);
            return -1;
        }
        switch (fmt) {
        case INFER_CHAT_GEMMA:
            if (sys) {
                system = c;   /* Gemma: prepended to the next user turn */
                break;
            }
            put(&o, "<start_of_turn>%s\n", user ? "user" : "model");
            if (user && system) {
                put(&o, "%s\n\n", system);
                system = NULL;
            }
            put(&o, "%s<end_of_turn>\n", c);
            break;
        case INFER_CHAT_LLAMA3:
            put(&o, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", r, c);
            break;
        case INFER_CHAT_CHATML:
            put(&o, "<|im_start|>%s\n%s<|im_end|>\n", r, c);
            break;
        case INFER_CHAT_LLAMA2:
            /* [INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U2 [/INST] */
            if (sys) {
                system = c;
            } else if (user) {
                put(&o, "[INST] ");
                if (system) {
                    put(&o, "<<SYS>>\n%s\n<</SYS>>\n\n", system);
                    system = NULL;
                }
                put(&o, "%s [/INST]", c);
            } else {
                put(&o, " %s </s><s>", c);
            }
            break;
        default:
            snprintf(err, errlen, "chat: unknown format %d", fmt);
            return -1;
        }
    }
    if (add_assistant) {
        if (fmt == INFER_CHAT_GEMMA)
            put(&o, "<start_of_turn>model\n");
        else if (fmt == INFER_CHAT_LLAMA3)
            put(&o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        else if (fmt == INFER_CHAT_CHATML)
            put(&o, "<|im_start|>assistant\n");
    }
    return (long)o.len;
}

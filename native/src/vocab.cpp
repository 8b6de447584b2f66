#include "vocab.h"
#include "errors.h"
#include "gguf_meta.h"

#include "llama.h"

namespace rrr {

Vocab::Vocab(const std::string & path) : path_(path) {
    check_gguf_header(path);
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    model_ = llama_model_load_from_file(path.c_str(), mp);
    if (!model_) throw Error(path + ": libllama could not load the tokenizer from this file");
    vocab_ = llama_model_get_vocab(model_);
    const char * t = llama_model_chat_template(model_, nullptr);
    if (t && *t) {
        template_ = t;
        template_source_ = "model";
    } else {
        template_source_ = "chatml";
    }
}

Vocab::~Vocab() {
    if (model_) llama_model_free(model_);
}

int32_t Vocab::n_tokens() const { return llama_vocab_n_tokens(vocab_); }
bool Vocab::is_eog(int32_t token) const { return llama_vocab_is_eog(vocab_, token); }
int32_t Vocab::bos() const { return llama_vocab_bos(vocab_); }
int32_t Vocab::eos() const { return llama_vocab_eos(vocab_); }

std::vector<int32_t> Vocab::eog_tokens() const {
    std::vector<int32_t> out;
    for (int32_t i = 0; i < n_tokens(); ++i) {
        if (llama_vocab_is_eog(vocab_, i)) out.push_back(i);
    }
    return out;
}

std::vector<int32_t> Vocab::tokenize(const std::string & text, bool add_special, bool parse_special) const {
    std::vector<int32_t> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), add_special, parse_special);
    if (n < 0) {
        if (n == INT32_MIN) throw Error("tokenize: text too long");
        out.resize(-n);
        n = llama_tokenize(vocab_, text.data(), (int32_t) text.size(), out.data(), (int32_t) out.size(), add_special, parse_special);
    }
    if (n < 0) throw Error("tokenize: failed");
    out.resize(n);
    return out;
}

std::string Vocab::piece(int32_t token, bool render_special) const {
    if (token < 0 || token >= n_tokens()) throw Error("token id " + std::to_string(token) + " is outside the vocabulary");
    char buf[256];
    int32_t n = llama_token_to_piece(vocab_, token, buf, sizeof(buf), 0, render_special);
    if (n >= 0) return std::string(buf, n);
    std::string big(-n, '\0');
    n = llama_token_to_piece(vocab_, token, big.data(), (int32_t) big.size(), 0, render_special);
    return big.substr(0, n < 0 ? 0 : n);
}

std::string Vocab::detokenize(const std::vector<int32_t> & tokens, bool render_special) const {
    for (int32_t t : tokens) {
        if (t < 0 || t >= n_tokens()) throw Error("detokenize: token id " + std::to_string(t) + " is outside the vocabulary");
    }
    std::string out(tokens.size() * 8 + 16, '\0');
    int32_t n = llama_detokenize(vocab_, tokens.data(), (int32_t) tokens.size(), out.data(), (int32_t) out.size(), false, render_special);
    if (n < 0) {
        out.resize(-n);
        n = llama_detokenize(vocab_, tokens.data(), (int32_t) tokens.size(), out.data(), (int32_t) out.size(), false, render_special);
    }
    out.resize(n < 0 ? 0 : n);
    return out;
}

std::string Vocab::apply_chat(const std::vector<ChatMessage> & messages, bool add_assistant) const {
    std::vector<llama_chat_message> msgs;
    size_t total = 0;
    for (const auto & m : messages) {
        msgs.push_back({m.role.c_str(), m.content.c_str()});
        total += m.role.size() + m.content.size();
    }
    const char * tmpl = template_.empty() ? "chatml" : template_.c_str();
    std::string buf(total * 2 + 256, '\0');
    int32_t n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, buf.data(), (int32_t) buf.size());
    if (n > (int32_t) buf.size()) {
        buf.resize(n);
        n = llama_chat_apply_template(tmpl, msgs.data(), msgs.size(), add_assistant, buf.data(), (int32_t) buf.size());
    }
    if (n < 0) {
        throw Error(path_ + ": its chat template is not one libllama recognises (tokenizer.chat_template); "
                    "remove the key to use the chatml fallback");
    }
    buf.resize(n);
    return buf;
}

} // namespace rrr

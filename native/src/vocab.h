// Tokenizer and chat template from libllama's vocab-only load: the same tokenisation llama.cpp
// applies, without loading weights a second time.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct llama_model;
struct llama_vocab;

namespace rrr {

struct ChatMessage {
    std::string role;
    std::string content;
};

class Vocab {
public:
    explicit Vocab(const std::string & path); // throws rrr::Error naming path
    ~Vocab();
    Vocab(const Vocab &) = delete;
    Vocab & operator=(const Vocab &) = delete;

    int32_t n_tokens() const;
    std::vector<int32_t> tokenize(const std::string & text, bool add_special, bool parse_special) const;
    std::string detokenize(const std::vector<int32_t> & tokens, bool render_special) const;
    std::string piece(int32_t token, bool render_special) const;
    bool is_eog(int32_t token) const;
    int32_t bos() const;
    int32_t eos() const;
    std::vector<int32_t> eog_tokens() const;

    // The template text stored in the GGUF, empty when the model has none.
    const std::string & chat_template() const { return template_; }
    // Which template apply_chat uses: the model's own, or "chatml" as a documented fallback.
    const std::string & chat_template_source() const { return template_source_; }
    std::string apply_chat(const std::vector<ChatMessage> & messages, bool add_assistant) const;

private:
    std::string path_;
    llama_model * model_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::string template_;
    std::string template_source_;
};

} // namespace rrr

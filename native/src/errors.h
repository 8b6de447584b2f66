// One exception type crosses from native code to JS: its message is the user-facing one-line
// error (naming the file or parameter at fault). Anything else is a bug and keeps its own text.
#pragma once
#include <stdexcept>
#include <string>

namespace rrr {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string & msg) : std::runtime_error(msg) {}
};

} // namespace rrr

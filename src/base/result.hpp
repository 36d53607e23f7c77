// Errors are values: Result<T> carries either a T or an Error with context.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace popek::base {

// An error for people: what failed, in words, plus the errno if a syscall failed.
struct Error {
    std::string message;
    int sys_errno = 0;

    // "KVM_CREATE_VM: Permission denied" style message from the current errno.
    static Error from_errno(std::string what, int err = errno) {
        return Error{std::move(what) + ": " + std::strerror(err), err};
    }
    // Prefix context: err.context("loading kernel") -> "loading kernel: <message>".
    [[nodiscard]] Error context(const std::string& where) const {
        return Error{where + ": " + message, sys_errno};
    }
};

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
    Result(Error error) : v_(std::move(error)) {}      // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    [[nodiscard]] const Error& error() const { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT(google-explicit-constructor)
    [[nodiscard]] bool ok() const { return ok_; }
    explicit operator bool() const { return ok_; }
    [[nodiscard]] const Error& error() const { return err_; }

private:
    Error err_;
    bool ok_ = true;
};

inline Result<void> ok() { return {}; }

}  // namespace popek::base

// Propagate an error from an expression of type Result<T>; evaluates to nothing.
#define POPEK_TRY(expr)                                   \
    do {                                                  \
        auto popek_try_r_ = (expr);                       \
        if (!popek_try_r_.ok()) return popek_try_r_.error(); \
    } while (0)

#define POPEK_CONCAT_INNER(a, b) a##b
#define POPEK_CONCAT(a, b) POPEK_CONCAT_INNER(a, b)
// Declare `decl` from the value of a Result<T>, or return its error.
#define POPEK_ASSIGN_OR_RETURN(decl, expr) \
    POPEK_ASSIGN_OR_RETURN_IMPL(POPEK_CONCAT(popek_r_, __LINE__), decl, expr)
#define POPEK_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
    auto tmp = (expr);                               \
    if (!tmp.ok()) return tmp.error();               \
    decl = std::move(tmp).value()

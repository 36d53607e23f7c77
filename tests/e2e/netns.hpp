// Two "hosts" for migration tests: network namespaces joined by a veth pair.
//
//   namespace a  (veth end va, 10.77.0.1/24, lo up)  <--veth-->  namespace b  (vb, 10.77.0.2/24, lo up)
//
// Made with ip(8) and removed when the object goes (deleting a namespace
// deletes its veth end, and the pair with it), so a failing test leaves
// nothing behind; namespaces left by a test process that died are removed by
// the next one. Only these addresses and loopback are used. Programs run
// inside a namespace through `ip netns exec` (it execs the program in place,
// so the Child's pid is the program's); a thread of the test itself can
// enter one with Netns::Enter.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace popek::test {

class NetnsPair {
public:
    NetnsPair();
    ~NetnsPair();
    NetnsPair(const NetnsPair&) = delete;
    NetnsPair& operator=(const NetnsPair&) = delete;

    // Empty when the pair is up; else what failed (not root, no ip(8), ...).
    [[nodiscard]] const std::string& error() const { return error_; }
    [[nodiscard]] bool ok() const { return error_.empty(); }

    // side 0 is "a", 1 is "b".
    [[nodiscard]] const std::string& name(int side) const { return names_[side]; }
    [[nodiscard]] std::string addr(int side) const { return side == 0 ? "10.77.0.1" : "10.77.0.2"; }
    [[nodiscard]] std::string veth(int side) const { return side == 0 ? "va" : "vb"; }
    // argv run inside the namespace.
    [[nodiscard]] std::vector<std::string> exec_in(int side, const std::vector<std::string>& argv) const;
    // `ip link set <veth> down|up` inside the side's namespace.
    bool set_link(int side, bool up) const;

private:
    std::string names_[2];
    std::string error_;
};

// Moves the calling thread into a named namespace (setns(2) on
// /run/netns/NAME: network namespaces are per thread) and back at scope end.
class NetnsEnter {
public:
    explicit NetnsEnter(const std::string& name);
    ~NetnsEnter();
    NetnsEnter(const NetnsEnter&) = delete;
    NetnsEnter& operator=(const NetnsEnter&) = delete;
    [[nodiscard]] bool ok() const { return ok_; }

private:
    int home_ = -1;
    bool ok_ = false;
};

// Whether a TCP socket of process `pid` listens on `port` (its namespace's
// /proc/PID/net/tcp, state 0A).
bool pid_listens(int pid, uint16_t port);

}  // namespace popek::test

// An epoll loop on its own thread. Handlers run on that thread; add()
// before start() or from a handler. Device back-ends (console input, later
// virtio queues) hang their file descriptors here.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "base/result.hpp"
#include "base/unique_fd.hpp"

namespace popek::base {

class EventLoop {
public:
    // Called with the epoll events; return false to stop watching the fd.
    using Handler = std::function<bool(uint32_t events)>;

    static Result<std::unique_ptr<EventLoop>> create(const char* thread_name);
    ~EventLoop();

    Result<void> add(int fd, uint32_t events, Handler handler);
    void start();
    void stop();  // idempotent; joins the thread

private:
    EventLoop() = default;
    void thread_main();

    UniqueFd epoll_;
    UniqueFd wake_;  // eventfd that ends the loop
    std::mutex mu_;
    std::map<int, Handler> handlers_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
    const char* name_ = "popek-events";
};

}  // namespace popek::base

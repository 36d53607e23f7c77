// An epoll loop on its own thread. Handlers run on that thread; add()
// before start() or from a handler. Device back-ends (console input, later
// virtio queues) hang their file descriptors here.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <thread>
#include <vector>

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
    // Stops watching fd (from any thread; from the loop thread the handler
    // may also just return false).
    void remove(int fd);
    // Runs fn on the loop thread soon (fire and forget).
    void post(std::function<void()> fn);
    // Runs fn on the loop thread and waits for it; runs it inline when called
    // from the loop thread or when the loop is not running.
    void run_sync(const std::function<void()>& fn);
    [[nodiscard]] bool on_loop_thread() const;
    void start();
    void stop();  // idempotent; joins the thread

private:
    EventLoop() = default;
    void thread_main();

    UniqueFd epoll_;
    UniqueFd wake_;  // eventfd that ends the loop
    void run_posted();

    std::mutex mu_;
    std::map<int, std::shared_ptr<Handler>> handlers_;
    std::vector<std::function<void()>> posted_;
    UniqueFd post_;  // eventfd: posted work is waiting
    std::atomic<bool> stopping_{false};
    std::thread thread_;
    const char* name_ = "popek-events";
};

}  // namespace popek::base

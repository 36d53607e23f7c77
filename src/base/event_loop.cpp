#include "base/event_loop.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <condition_variable>

namespace popek::base {

Result<std::unique_ptr<EventLoop>> EventLoop::create(const char* thread_name) {
    std::unique_ptr<EventLoop> loop(new EventLoop());
    loop->name_ = thread_name;
    loop->epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!loop->epoll_.valid()) return Error::from_errno("epoll_create1");
    loop->wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!loop->wake_.valid()) return Error::from_errno("eventfd");
    loop->post_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!loop->post_.valid()) return Error::from_errno("eventfd");
    for (int fd : {loop->wake_.get(), loop->post_.get()}) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(loop->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
            return Error::from_errno("epoll_ctl(event loop internal fd)");
    }
    return loop;
}

EventLoop::~EventLoop() { stop(); }

Result<void> EventLoop::add(int fd, uint32_t events, Handler handler) {
    {
        std::lock_guard lock(mu_);
        handlers_[fd] = std::make_shared<Handler>(std::move(handler));
    }
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        std::lock_guard lock(mu_);
        handlers_.erase(fd);
        return Error::from_errno("epoll_ctl(add fd " + std::to_string(fd) + ")");
    }
    return {};
}

void EventLoop::remove(int fd) {
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
    std::lock_guard lock(mu_);
    handlers_.erase(fd);
}

void EventLoop::post(std::function<void()> fn) {
    {
        std::lock_guard lock(mu_);
        posted_.push_back(std::move(fn));
    }
    uint64_t one = 1;
    (void)!::write(post_.get(), &one, sizeof one);
}

bool EventLoop::on_loop_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

void EventLoop::run_sync(const std::function<void()>& fn) {
    if (!thread_.joinable() || on_loop_thread() || stopping_.load()) {
        fn();
        return;
    }
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool done = false;
    post([&] {
        fn();
        std::lock_guard lock(done_mu);
        done = true;
        done_cv.notify_all();
    });
    std::unique_lock lock(done_mu);
    done_cv.wait(lock, [&] { return done; });
}

void EventLoop::run_posted() {
    uint64_t n;
    (void)!::read(post_.get(), &n, sizeof n);
    std::vector<std::function<void()>> work;
    {
        std::lock_guard lock(mu_);
        work.swap(posted_);
    }
    for (auto& fn : work) fn();
}

void EventLoop::start() { thread_ = std::thread([this] { thread_main(); }); }

void EventLoop::stop() {
    stopping_.store(true);
    uint64_t one = 1;
    if (wake_.valid()) (void)!::write(wake_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
}

void EventLoop::thread_main() {
    pthread_setname_np(pthread_self(), name_);
    epoll_event events[16];
    while (!stopping_.load()) {
        int n = ::epoll_wait(epoll_.get(), events, 16, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == wake_.get()) {
                run_posted();  // nobody waits forever on work posted before stop()
                return;
            }
            if (fd == post_.get()) {
                run_posted();
                continue;
            }
            std::shared_ptr<Handler> h;  // stays alive even if the handler removes itself
            {
                std::lock_guard lock(mu_);
                auto it = handlers_.find(fd);
                if (it != handlers_.end()) h = it->second;
            }
            if (h != nullptr && !(*h)(events[i].events)) remove(fd);
        }
    }
}

}  // namespace popek::base

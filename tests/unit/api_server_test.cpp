#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "api/client.hpp"
#include "api/server.hpp"
#include "base/unique_fd.hpp"

namespace popek::api {
namespace {

using nlohmann::json;

// A tiny VM: running or paused, with a snapshot that can be held open to
// show that one slow command does not block the server.
class FakeController : public vmm::Controller {
public:
    vmm::Reply execute(const vmm::Command& command) override {
        if (const auto* s = std::get_if<vmm::SnapshotCommand>(&command)) return snapshot(*s);
        std::lock_guard lock(mu_);
        executed_++;
        return std::visit([this](const auto& c) { return run(c); }, command);
    }

    // Makes the next snapshot wait inside execute() until release_snapshot().
    void hold_snapshots() {
        std::lock_guard lock(mu_);
        hold_ = true;
    }
    void wait_until_snapshot_started() {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return snapshot_started_; });
    }
    void release_snapshot() {
        std::lock_guard lock(mu_);
        hold_ = false;
        cv_.notify_all();
    }

    int executed() {
        std::lock_guard lock(mu_);
        return executed_;
    }
    uint32_t last_timeout_ms() {
        std::lock_guard lock(mu_);
        return last_timeout_ms_;
    }
    std::string last_snapshot() {
        std::lock_guard lock(mu_);
        return last_snapshot_;
    }

private:
    vmm::Reply run(const vmm::InfoCommand&) { return vmm::Reply::ok({{"state", paused_ ? "paused" : "running"}}); }
    vmm::Reply run(const vmm::PauseCommand&) {
        if (paused_) return vmm::Reply::error(vmm::ReplyStatus::Conflict, "the VM is already paused");
        paused_ = true;
        return vmm::Reply::ok();
    }
    vmm::Reply run(const vmm::ResumeCommand&) {
        if (!paused_) return vmm::Reply::error(vmm::ReplyStatus::Conflict, "the VM is not paused");
        paused_ = false;
        return vmm::Reply::ok();
    }
    vmm::Reply run(const vmm::ShutdownCommand& c) {
        last_timeout_ms_ = c.timeout_ms;
        return vmm::Reply::ok();
    }
    vmm::Reply run(const vmm::MetricsCommand&) {
        return vmm::Reply{vmm::ReplyStatus::Ok, {}, "popek_vcpus 1\npopek_paused " + std::to_string(paused_) + "\n"};
    }
    vmm::Reply run(const vmm::SnapshotCommand&) { return vmm::Reply::ok(); }  // see snapshot()
    vmm::Reply run(const vmm::MigrateCommand&) { return vmm::Reply::ok({{"state", "started"}}); }
    vmm::Reply run(const vmm::MigrationStatusCommand&) { return vmm::Reply::ok({{"phase", "none"}}); }

    vmm::Reply snapshot(const vmm::SnapshotCommand& s) {
        std::unique_lock lock(mu_);
        executed_++;
        snapshot_started_ = true;
        cv_.notify_all();
        cv_.wait(lock, [this] { return !hold_; });
        if (s.path == "/unwritable") return vmm::Reply::error(vmm::ReplyStatus::BadRequest, "cannot write /unwritable");
        if (s.path == "/broken") return vmm::Reply::error(vmm::ReplyStatus::Internal, "disk exploded");
        if (s.path == "/throw") throw std::runtime_error("controller threw");
        last_snapshot_ = s.path;
        return vmm::Reply::ok({{"path", s.path}});
    }

    std::mutex mu_;
    std::condition_variable cv_;
    bool paused_ = false;
    bool hold_ = false;
    bool snapshot_started_ = false;
    int executed_ = 0;
    uint32_t last_timeout_ms_ = 0;
    std::string last_snapshot_;
};

class ApiServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/popek-api-XXXXXX";  // short: socket paths must fit in 108 bytes
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        sock_ = dir_ + "/api.sock";
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<ApiServer> start() {
        auto server = ApiServer::start(sock_, controller_);
        if (!server) {
            ADD_FAILURE() << server.error().message;
            return nullptr;
        }
        return std::move(server).value();
    }

    Response request(const std::string& method, const std::string& path, const std::string& body = {}) {
        auto r = Client(sock_).request(method, path, body);
        if (!r) {
            ADD_FAILURE() << method << " " << path << ": " << r.error().message;
            return {};
        }
        return *r;
    }

    // The "error" of a JSON error body (empty if the body is not one).
    static std::string error_of(const Response& r) {
        const auto j = json::parse(r.body, nullptr, false);
        return j.is_object() && j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>() : "";
    }

    // A raw HTTP/1.1 exchange, to see headers the client does not return.
    std::string raw_exchange(const std::string& request_text) {
        base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        sock_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
        EXPECT_EQ(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
        EXPECT_EQ(::write(fd.get(), request_text.data(), request_text.size()),
                  static_cast<ssize_t>(request_text.size()));
        std::string reply;
        char buf[4096];
        for (ssize_t n; (n = ::read(fd.get(), buf, sizeof(buf))) > 0;) reply.append(buf, static_cast<size_t>(n));
        return reply;
    }

    // A socket file nobody listens on, as a killed popek leaves behind.
    void make_stale_socket() {
        base::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        sock_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
        ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0);
    }

    std::string dir_, sock_;
    FakeController controller_;
};

TEST_F(ApiServerTest, InfoIsJson) {
    auto server = start();
    ASSERT_TRUE(server);
    auto r = request("GET", "/vm");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "application/json");
    EXPECT_EQ(json::parse(r.body, nullptr, false), json({{"state", "running"}}));
}

TEST_F(ApiServerTest, PauseResumeAndConflicts) {
    auto server = start();
    ASSERT_TRUE(server);
    EXPECT_EQ(request("PUT", "/vm/resume").status, 409);
    EXPECT_EQ(request("PUT", "/vm/pause").status, 200);
    EXPECT_EQ(json::parse(request("GET", "/vm").body, nullptr, false)["state"], "paused");
    auto again = request("PUT", "/vm/pause");
    EXPECT_EQ(again.status, 409);
    EXPECT_EQ(again.content_type, "application/json");
    EXPECT_EQ(error_of(again), "the VM is already paused");
    EXPECT_EQ(request("PUT", "/vm/resume").status, 200);
    EXPECT_EQ(json::parse(request("GET", "/vm").body, nullptr, false)["state"], "running");
}

TEST_F(ApiServerTest, ShutdownPassesTheTimeout) {
    auto server = start();
    ASSERT_TRUE(server);
    EXPECT_EQ(request("PUT", "/vm/shutdown", R"({"timeout_ms": 1234})").status, 200);
    EXPECT_EQ(controller_.last_timeout_ms(), 1234u);
    EXPECT_EQ(request("PUT", "/vm/shutdown").status, 200);
    EXPECT_EQ(controller_.last_timeout_ms(), vmm::ShutdownCommand{}.timeout_ms);
}

TEST_F(ApiServerTest, SnapshotAndItsErrors) {
    auto server = start();
    ASSERT_TRUE(server);
    auto r = request("PUT", "/vm/snapshot", R"({"path": "/srv/snap"})");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(controller_.last_snapshot(), "/srv/snap");
    EXPECT_EQ(request("PUT", "/vm/snapshot", R"({"path": "/unwritable"})").status, 400);
    auto broken = request("PUT", "/vm/snapshot", R"({"path": "/broken"})");
    EXPECT_EQ(broken.status, 500);
    EXPECT_EQ(error_of(broken), "disk exploded");
    auto thrown = request("PUT", "/vm/snapshot", R"({"path": "/throw"})");
    EXPECT_EQ(thrown.status, 500);
    EXPECT_NE(error_of(thrown).find("controller threw"), std::string::npos) << thrown.body;
}

TEST_F(ApiServerTest, MetricsIsPrometheusText) {
    auto server = start();
    ASSERT_TRUE(server);
    auto r = request("GET", "/metrics");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.content_type, "text/plain; version=0.0.4");
    EXPECT_EQ(r.body, "popek_vcpus 1\npopek_paused 0\n");
}

TEST_F(ApiServerTest, RequestErrorsNeverReachTheController) {
    auto server = start();
    ASSERT_TRUE(server);
    auto not_found = request("GET", "/nope");
    EXPECT_EQ(not_found.status, 404);
    EXPECT_NE(error_of(not_found).find("/nope"), std::string::npos) << not_found.body;
    EXPECT_EQ(request("PUT", "/vm").status, 405);
    auto malformed = request("PUT", "/vm/shutdown", R"({"timeout_ms": )");
    EXPECT_EQ(malformed.status, 400);
    EXPECT_NE(error_of(malformed).find("malformed JSON"), std::string::npos) << malformed.body;
    auto relative = request("PUT", "/vm/snapshot", R"({"path": "snap"})");
    EXPECT_EQ(relative.status, 400);
    EXPECT_EQ(relative.content_type, "application/json");
    EXPECT_EQ(request("PUT", "/vm/pause", "{}").status, 400);
    EXPECT_EQ(controller_.executed(), 0);
}

TEST_F(ApiServerTest, MethodNotAllowedSendsAllow) {
    auto server = start();
    ASSERT_TRUE(server);
    const std::string reply = raw_exchange("PUT /vm HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(reply.rfind("HTTP/1.1 405", 0), 0u) << reply;
    EXPECT_NE(reply.find("Allow: GET\r\n"), std::string::npos) << reply;
}

TEST_F(ApiServerTest, BodyOver64KiBIs413) {
    auto server = start();
    ASSERT_TRUE(server);
    // Declared far too large: refused before the body is read.
    const std::string reply = raw_exchange(
        "PUT /vm/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
    // Chunked, so the size is only known while it arrives.
    const std::string chunk(40000, ' ');
    char size_line[32];
    std::snprintf(size_line, sizeof(size_line), "%zx\r\n", chunk.size());
    const std::string chunked = "PUT /vm/snapshot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                "Connection: close\r\n\r\n" +
                                std::string(size_line) + chunk + "\r\n" + size_line + chunk + "\r\n0\r\n\r\n";
    const std::string reply2 = raw_exchange(chunked);
    EXPECT_EQ(reply2.rfind("HTTP/1.1 413", 0), 0u) << reply2.substr(0, 200);
    // And as a client sends it, the whole body after the headers: read and
    // dropped, so the client gets the 413 rather than a broken pipe.
    auto r = request("PUT", "/vm/snapshot", R"({"path": "/)" + std::string(200000, 'a') + "\"}");
    EXPECT_EQ(r.status, 413);
    EXPECT_NE(error_of(r).find("larger than 65536 bytes"), std::string::npos) << r.body;
    EXPECT_EQ(controller_.executed(), 0);
}

TEST_F(ApiServerTest, BodyOver1MiBIsRefusedBeforeItIsReadAndTheClientStillHearsWhy) {
    auto server = start();
    ASSERT_TRUE(server);
    // The server answers after the headers and closes; the client's send
    // fails part way, and it reads the 413 that is already waiting.
    auto r = request("PUT", "/vm/snapshot", std::string(4 << 20, ' '));
    EXPECT_EQ(r.status, 413);
    EXPECT_NE(error_of(r).find("larger than 65536 bytes"), std::string::npos) << r.body;
    EXPECT_EQ(request("GET", "/vm").status, 200);
    EXPECT_EQ(controller_.executed(), 1);
}

TEST_F(ApiServerTest, KeepsServingAfterErrors) {
    auto server = start();
    ASSERT_TRUE(server);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(request("GET", "/nope").status, 404);
        EXPECT_EQ(request("PUT", "/vm/snapshot", "{").status, 400);
        EXPECT_EQ(request("PUT", "/vm/resume").status, 409);
        EXPECT_EQ(request("PUT", "/vm/snapshot", R"({"path": "/throw"})").status, 500);
        raw_exchange("GARBAGE\r\n\r\n");
        EXPECT_EQ(request("GET", "/vm").status, 200);
    }
}

TEST_F(ApiServerTest, SlowCommandDoesNotBlockOthers) {
    auto server = start();
    ASSERT_TRUE(server);
    controller_.hold_snapshots();
    Response snapshot;
    std::thread slow([&] { snapshot = request("PUT", "/vm/snapshot", R"({"path": "/srv/slow"})"); });
    controller_.wait_until_snapshot_started();
    // The snapshot is inside execute(); another connection is still served.
    EXPECT_EQ(request("GET", "/metrics").status, 200);
    controller_.release_snapshot();
    slow.join();
    EXPECT_EQ(snapshot.status, 200);
    EXPECT_EQ(controller_.last_snapshot(), "/srv/slow");
}

size_t open_fds() {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) n++;
    return n;
}

TEST_F(ApiServerTest, SocketIsPrivateAndUnlinkedAfterwards) {
    const size_t fds_before = open_fds();
    auto server = start();
    ASSERT_TRUE(server);
    struct stat st{};
    ASSERT_EQ(::lstat(sock_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(request("GET", "/vm").status, 200);
    server.reset();
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(sock_)));
    EXPECT_EQ(open_fds(), fds_before);  // the listening socket is closed too
    auto r = Client(sock_).request("GET", "/vm");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("no API socket at " + sock_), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("--api-sock"), std::string::npos) << r.error().message;
}

TEST_F(ApiServerTest, SecondServerOnTheSamePathIsRefused) {
    auto first = start();
    ASSERT_TRUE(first);
    FakeController other;
    auto second = ApiServer::start(sock_, other);
    ASSERT_FALSE(second.ok());
    EXPECT_NE(second.error().message.find("already in use"), std::string::npos) << second.error().message;
    EXPECT_EQ(request("GET", "/vm").status, 200);  // the first one is untouched
}

TEST_F(ApiServerTest, StaleSocketIsReplaced) {
    make_stale_socket();
    auto refused = Client(sock_).request("GET", "/vm");
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message.find("cannot connect to " + sock_), std::string::npos)
        << refused.error().message;
    EXPECT_NE(refused.error().message.find("is popek running with --api-sock"), std::string::npos);

    auto server = start();
    ASSERT_TRUE(server);
    EXPECT_EQ(request("GET", "/vm").status, 200);
}

TEST_F(ApiServerTest, RefusesPathsItCannotUse) {
    {
        std::ofstream(sock_) << "not a socket";
        auto r = ApiServer::start(sock_, controller_);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message.find("is not a socket"), std::string::npos) << r.error().message;
        EXPECT_TRUE(std::filesystem::is_regular_file(sock_));  // left alone
    }
    auto missing = ApiServer::start(dir_ + "/no/such/dir/api.sock", controller_);
    ASSERT_FALSE(missing.ok());
    EXPECT_NE(missing.error().message.find("does not exist"), std::string::npos) << missing.error().message;

    auto too_long = ApiServer::start(dir_ + "/" + std::string(120, 's'), controller_);
    ASSERT_FALSE(too_long.ok());
    EXPECT_NE(too_long.error().message.find("must be shorter than 108 bytes"), std::string::npos)
        << too_long.error().message;
}

}  // namespace
}  // namespace popek::api

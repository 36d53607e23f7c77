// `popek ctl` as a user runs it, against an API server in this process
// whose controller records what arrived.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <mutex>

#include "api/server.hpp"
#include "process.hpp"

namespace popek::test {
namespace {

using namespace std::chrono_literals;

class RecordingController : public vmm::Controller {
public:
    vmm::Reply execute(const vmm::Command& c) override {
        std::lock_guard lock(mu_);
        last_ = c;
        if (std::holds_alternative<vmm::ResumeCommand>(c))
            return vmm::Reply::error(vmm::ReplyStatus::Conflict, "the VM is not paused");
        if (std::holds_alternative<vmm::MetricsCommand>(c)) return vmm::Reply{vmm::ReplyStatus::Ok, {}, "popek_up 1\n"};
        if (std::holds_alternative<vmm::InfoCommand>(c)) return vmm::Reply::ok({{"state", "running"}, {"cpus", 2}});
        return vmm::Reply::ok();
    }
    vmm::Command last() {
        std::lock_guard lock(mu_);
        return last_;
    }

private:
    std::mutex mu_;
    vmm::Command last_;
};

class Ctl : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/popek-ctl-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        sock_ = dir_ + "/api.sock";
        auto server = api::ApiServer::start(sock_, controller_);
        ASSERT_TRUE(server.ok()) << server.error().message;
        server_ = std::move(server).value();
    }
    void TearDown() override {
        server_.reset();
        std::filesystem::remove_all(dir_);
    }

    ProcessResult ctl(std::vector<std::string> args) {
        std::vector<std::string> argv{POPEK_BIN, "ctl", "--api-sock", sock_};
        argv.insert(argv.end(), args.begin(), args.end());
        return run_process(argv, 30s);
    }

    std::string dir_, sock_;
    RecordingController controller_;
    std::unique_ptr<api::ApiServer> server_;
};

TEST_F(Ctl, InfoPrintsPrettyJson) {
    auto r = ctl({"info"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "{\n  \"cpus\": 2,\n  \"state\": \"running\"\n}\n");
    EXPECT_TRUE(std::holds_alternative<vmm::InfoCommand>(controller_.last()));
}

TEST_F(Ctl, MetricsPrintsTheText) {
    auto r = ctl({"metrics"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "popek_up 1\n");
}

TEST_F(Ctl, PauseAndShutdownPrintAShortLine) {
    auto r = ctl({"pause"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "paused\n");
    EXPECT_TRUE(std::holds_alternative<vmm::PauseCommand>(controller_.last()));

    r = ctl({"shutdown", "--timeout-ms", "750"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "shutdown requested\n");
    auto c = controller_.last();
    ASSERT_TRUE(std::holds_alternative<vmm::ShutdownCommand>(c));
    EXPECT_EQ(std::get<vmm::ShutdownCommand>(c).timeout_ms, 750u);
}

TEST_F(Ctl, SnapshotDirIsMadeAbsolute) {
    auto r = ctl({"snapshot", "snaps/../snap1"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string expected = (std::filesystem::current_path() / "snap1").string();
    auto c = controller_.last();
    ASSERT_TRUE(std::holds_alternative<vmm::SnapshotCommand>(c));
    EXPECT_EQ(std::get<vmm::SnapshotCommand>(c).path, expected);
    EXPECT_EQ(r.out, "snapshot saved in " + expected + "\n");
}

TEST_F(Ctl, RefusedRequestIsTheServersMessageAndStatus1) {
    auto r = ctl({"resume"});
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(r.err, "popek: error: the VM is not paused\n");
    EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_F(Ctl, NoServerIsOneLineAndStatus1) {
    auto r = run_process({POPEK_BIN, "ctl", "--api-sock", dir_ + "/other.sock", "info"}, 30s);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_EQ(lines(r.err).size(), 1u) << r.err;
    EXPECT_NE(r.err.find("no API socket at " + dir_ + "/other.sock"), std::string::npos) << r.err;
}

TEST_F(Ctl, BadUsageIsStatus2) {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"frob"}, {}, {"snapshot"}, {"shutdown", "--timeout-ms", "-5"}, {"info", "extra"}}) {
        auto r = ctl(args);
        EXPECT_EQ(r.exit_code, 2) << r.err;
        EXPECT_EQ(lines(r.err).size(), 1u) << r.err;
        EXPECT_EQ(r.err.rfind("popek: error: ", 0), 0u) << r.err;
    }
    auto r = run_process({POPEK_BIN, "ctl", "info"}, 30s);
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_NE(r.err.find("--api-sock"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace popek::test

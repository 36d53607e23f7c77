#include "api/server.hpp"

#include <microhttpd.h>

#include <cstdlib>
#include <string_view>

#include "api/request.hpp"
#include "api/unix_listener.hpp"

namespace popek::api {

namespace {

constexpr unsigned kMaxConnections = 32;
// A body over kMaxBodyBytes is read and dropped, then refused with 413:
// answering before it is read makes the client's send fail with EPIPE and
// lose the answer. Only a body declared larger than this is refused at once.
constexpr unsigned long long kMaxDrainBytes = 1 << 20;
constexpr unsigned kIdleTimeoutSeconds = 60;
constexpr const char* kJson = "application/json";
constexpr const char* kMetricsType = "text/plain; version=0.0.4";

struct HttpResponse {
    unsigned status = 200;
    std::string content_type = kJson;
    std::string body;
    std::string allow;
};

// Never throws: anything from the request is already printable ASCII, and a
// controller's odd bytes are replaced rather than failing the reply.
std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

HttpResponse from_error(const HttpError& e) { return {e.status, kJson, dump(e.body()), e.allow}; }

unsigned http_status(vmm::ReplyStatus s) {
    switch (s) {
        case vmm::ReplyStatus::Ok: return 200;
        case vmm::ReplyStatus::BadRequest: return 400;
        case vmm::ReplyStatus::Conflict: return 409;
        case vmm::ReplyStatus::Internal: return 500;
    }
    return 500;
}

HttpResponse from_reply(const vmm::Command& command, const vmm::Reply& reply) {
    const unsigned status = http_status(reply.status);
    if (status != 200) {
        // Every error body is {"error": "..."}, whatever the controller filled in.
        if (reply.body.is_object() && reply.body.contains("error") && reply.body["error"].is_string())
            return {status, kJson, dump(reply.body), {}};
        const std::string message = reply.text.empty() ? "the VMM failed without a message" : reply.text;
        return {status, kJson, dump(nlohmann::json{{"error", message}}), {}};
    }
    if (std::holds_alternative<vmm::MetricsCommand>(command)) return {200, kMetricsType, reply.text, {}};
    if (!reply.text.empty()) return {200, "text/plain; charset=utf-8", reply.text, {}};
    return {200, kJson, dump(reply.body.is_null() ? nlohmann::json::object() : reply.body), {}};
}

// What MHD keeps for one request between the calls of the access handler.
struct RequestState {
    std::string body;
    bool too_large = false;
};

MHD_Result send(MHD_Connection* connection, const HttpResponse& r) {
    MHD_Response* response =
        MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
    if (response == nullptr) return MHD_NO;
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, r.content_type.c_str());
    if (!r.allow.empty()) MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, r.allow.c_str());
    const MHD_Result ret = MHD_queue_response(connection, r.status, response);
    MHD_destroy_response(response);
    return ret;
}

bool too_large_to_drain(MHD_Connection* connection) {
    const char* length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length == nullptr) return false;
    char* end = nullptr;
    const unsigned long long n = std::strtoull(length, &end, 10);
    return end != length && n > kMaxDrainBytes;
}

void request_completed(void*, MHD_Connection*, void** req_cls, MHD_RequestTerminationCode) {
    delete static_cast<RequestState*>(*req_cls);
    *req_cls = nullptr;
}

}  // namespace

// The access handler, a friend of ApiServer so it can reach the controller.
struct RequestHandler {
    static MHD_Result handle(void* cls, MHD_Connection* connection, const char* url, const char* method,
                             const char* /*version*/, const char* upload_data, size_t* upload_data_size,
                             void** req_cls) noexcept {
        try {
            return handle_request(*static_cast<ApiServer*>(cls), connection, url, method, upload_data,
                                  upload_data_size, req_cls);
        } catch (...) {  // bad_alloc and the like: drop the connection, keep serving
            return MHD_NO;
        }
    }

    static MHD_Result handle_request(ApiServer& server, MHD_Connection* connection, const char* url,
                                     const char* method, const char* upload_data, size_t* upload_data_size,
                                     void** req_cls) {
        auto* state = static_cast<RequestState*>(*req_cls);
        if (state == nullptr) {  // headers only; the body (if any) comes next
            *req_cls = state = new RequestState;
            if (too_large_to_drain(connection)) return send(connection, from_error(body_too_large()));
            return MHD_YES;
        }
        if (*upload_data_size != 0) {
            if (!state->too_large) {
                state->too_large = state->body.size() + *upload_data_size > kMaxBodyBytes;
                if (state->too_large) {
                    state->body.clear();
                    state->body.shrink_to_fit();
                } else {
                    state->body.append(upload_data, *upload_data_size);
                }
            }
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (state->too_large) return send(connection, from_error(body_too_large()));

        const ParsedRequest parsed = parse_request(method, url, state->body);
        if (const auto* err = std::get_if<HttpError>(&parsed)) return send(connection, from_error(*err));
        const auto& command = std::get<vmm::Command>(parsed);
        HttpResponse response;
        try {
            response = from_reply(command, server.controller_.execute(command));
        } catch (const std::exception& e) {
            response = from_error(HttpError{500, "the VMM failed: " + printable(e.what(), 200), {}});
        }
        return send(connection, response);
    }
};

base::Result<std::unique_ptr<ApiServer>> ApiServer::start(const std::string& socket_path,
                                                          vmm::Controller& controller) {
    POPEK_ASSIGN_OR_RETURN(UnixListener listener, listen_unix(socket_path));
    std::unique_ptr<ApiServer> server(new ApiServer(socket_path, controller));
    server->dev_ = listener.dev;
    server->ino_ = listener.ino;
    // AUTO: poll() rather than select(), whose FD_SETSIZE a busy VMM can pass.
    // MHD owns the socket from here: MHD_stop_daemon closes it. If
    // MHD_start_daemon fails we cannot tell whether it closed it, so we don't
    // (one descriptor leaked on a failure that ends popek anyway).
    const int fd = listener.fd.release();
    const auto flags = static_cast<unsigned>(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION);
    server->daemon_ = MHD_start_daemon(flags, 0, nullptr, nullptr, &RequestHandler::handle, server.get(),
                                       MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, &request_completed,
                                       nullptr, MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
                                       MHD_OPTION_CONNECTION_TIMEOUT, kIdleTimeoutSeconds, MHD_OPTION_END);
    if (server->daemon_ == nullptr) {
        remove_socket_file(socket_path, listener.dev, listener.ino);
        return base::Error{"starting the HTTP server on " + socket_path + " failed (libmicrohttpd)"};
    }
    return server;
}

ApiServer::~ApiServer() {
    if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
    remove_socket_file(path_, dev_, ino_);
}

}  // namespace popek::api

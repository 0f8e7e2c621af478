package com.mme.mms;

import com.amazonaws.ml.mms.http.ErrorResponse;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpHeaderValues;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpUtil;
import io.netty.handler.codec.http.HttpVersion;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.ReferenceCountUtil;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Pattern;

/**
 * Checks each request before MMS's handlers see it (installed after Netty's HttpObjectAggregator by
 * RequestGuardInstaller): MMS 1.1.11 answered an unknown method (FOO /ping) 200, malformed register
 * bodies 500 with a Java exception class, registered a model with no workers (initial_workers 0) whose
 * invokes then waited forever, answered a negative response_timeout or a handler override 500, and
 * fetched http:// URLs. Those get 400 (405 for a method) with a one-line message here.
 */
@ChannelHandler.Sharable
final class RequestGuard extends ChannelInboundHandlerAdapter {

    static final RequestGuard INSTANCE = new RequestGuard();
    static final AtomicLong REFUSED = new AtomicLong();
    private static final Set<HttpMethod> METHODS =
            Set.of(HttpMethod.GET, HttpMethod.HEAD, HttpMethod.POST, HttpMethod.PUT, HttpMethod.DELETE,
                    HttpMethod.OPTIONS);
    private static final Pattern SCHEME = Pattern.compile("^[A-Za-z][A-Za-z0-9+.-]*:");
    private static final int MAX_WORKERS = 64;

    private RequestGuard() {}

    /** A refused request: status and one-line message. */
    private static final class Refusal extends Exception {
        private static final long serialVersionUID = 1L;
        final HttpResponseStatus status;

        Refusal(HttpResponseStatus status, String message) {
            super(message, null, false, false);
            this.status = status;
        }
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (OffLoopUnload.take(ctx, msg)) {
            return;
        }
        if (msg instanceof FullHttpRequest && isBodylessPing((FullHttpRequest) msg)) {
            ReferenceCountUtil.release(msg);
            FullHttpResponse rsp = new DefaultFullHttpResponse(HttpVersion.HTTP_1_1,
                    HttpResponseStatus.valueOf(PingEndpoint.status()));
            rsp.headers().set(HttpHeaderNames.CONTENT_TYPE, HttpHeaderValues.APPLICATION_JSON);
            NettyUtils.sendHttpResponse(ctx, rsp, true);
            return;
        }
        String registering = null;
        if (msg instanceof FullHttpRequest) {
            FullHttpRequest req = (FullHttpRequest) msg;
            try {
                registering = check(req);
            } catch (Refusal r) {
                ReferenceCountUtil.release(req);
                REFUSED.incrementAndGet();
                String type = r.status == HttpResponseStatus.METHOD_NOT_ALLOWED
                        ? "MethodNotAllowedException" : "BadRequestException";
                NettyUtils.sendJsonResponse(ctx, new ErrorResponse(r.status.code(), type, r.getMessage()),
                        r.status);
                return;
            }
        }
        if (registering == null) {
            ctx.fireChannelRead(msg);
            return;
        }
        // MMS registers on this thread, up to starting the load: a DELETE of the name waits meanwhile.
        Registrations.begin(registering);
        try {
            ctx.fireChannelRead(msg);
        } finally {
            Registrations.end(registering);
        }
    }

    /** HEAD or OPTIONS /ping, which MMS does not hand to our PingEndpoint: answered here, status only. */
    private static boolean isBodylessPing(FullHttpRequest req) {
        return (req.method() == HttpMethod.HEAD || req.method() == HttpMethod.OPTIONS)
                && "/ping".equals(new QueryStringDecoder(req.uri()).path());
    }

    /** Refuses bad input; returns the model name of a registration (POST /models), else null. */
    private static String check(FullHttpRequest req) throws Refusal {
        if (!METHODS.contains(req.method())) {
            throw new Refusal(HttpResponseStatus.METHOD_NOT_ALLOWED,
                    "Method " + oneLine(req.method().name()) + " is not supported");
        }
        if (!req.decoderResult().isSuccess() || req.method() != HttpMethod.POST) {
            return null; // MMS answers a request Netty could not decode 400 itself
        }
        QueryStringDecoder decoder = new QueryStringDecoder(req.uri());
        String path = decoder.path();
        if (!"/models".equals(path) && !"/models/".equals(path)) {
            return null;
        }
        CharSequence mime = HttpUtil.getMimeType(req);
        JsonObject body;
        if (mime != null && HttpHeaderValues.APPLICATION_JSON.contentEqualsIgnoreCase(mime)) {
            try {
                JsonElement doc = JsonParser.parseString(req.content().toString(StandardCharsets.UTF_8));
                if (!doc.isJsonObject()) {
                    throw new Refusal(HttpResponseStatus.BAD_REQUEST, "The request body must be a JSON object");
                }
                body = doc.getAsJsonObject();
            } catch (JsonParseException e) {
                throw new Refusal(HttpResponseStatus.BAD_REQUEST, "The request body is not valid JSON");
            }
        } else {
            body = new JsonObject(); // MMS reads the query string then
            for (var e : decoder.parameters().entrySet()) {
                List<String> values = e.getValue();
                body.addProperty(e.getKey(), values.isEmpty() ? "" : values.get(0));
            }
        }
        return checkRegistration(body);
    }

    private static String checkRegistration(JsonObject body) throws Refusal {
        if (body.has("handler")) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST,
                    "handler may not be set: the container serves every model with its own handler");
        }
        String name = string(body, "model_name");
        if (name != null) {
            String why = ModelNames.unaddressable(name);
            if (why != null) {
                throw new Refusal(HttpResponseStatus.BAD_REQUEST, why);
            }
        }
        String url = string(body, "url");
        if (url == null || url.isEmpty()) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST, "url is required: the model's local directory");
        }
        if (SCHEME.matcher(url).find() || url.indexOf('\0') >= 0) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST, "url must be a local directory, not a URL");
        }
        File dir = new File(url);
        if (dir.exists() && !dir.isDirectory()) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST, "url must be a local directory, not a file");
        }
        positive(body, "initial_workers", MAX_WORKERS);
        positive(body, "response_timeout", Integer.MAX_VALUE);
        positive(body, "batch_size", Integer.MAX_VALUE);
        positive(body, "max_batch_delay", Integer.MAX_VALUE);
        return name;
    }

    private static String string(JsonObject body, String key) throws Refusal {
        JsonElement v = body.get(key);
        if (v == null || v.isJsonNull()) {
            return null;
        }
        if (!v.isJsonPrimitive() || !v.getAsJsonPrimitive().isString()) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST, key + " must be a string");
        }
        return v.getAsString();
    }

    private static void positive(JsonObject body, String key, int max) throws Refusal {
        JsonElement v = body.get(key);
        if (v == null || v.isJsonNull()) {
            return;
        }
        long n;
        try {
            JsonPrimitive p = v.getAsJsonPrimitive();
            n = p.isNumber() ? p.getAsBigDecimal().longValueExact() : Long.parseLong(p.getAsString());
        } catch (RuntimeException e) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST, key + " must be an integer");
        }
        if (n < 1 || n > max) {
            throw new Refusal(HttpResponseStatus.BAD_REQUEST,
                    key + " must be between 1 and " + max + ", not " + n);
        }
    }

    private static String oneLine(String s) {
        String t = s.replaceAll("[^\\x21-\\x7e]", "?");
        return t.length() > 40 ? t.substring(0, 40) + "..." : t;
    }
}

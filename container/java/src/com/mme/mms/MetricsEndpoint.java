package com.mme.mms;

import com.amazonaws.ml.mms.servingsdk.impl.ModelServerResponse;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.ByteBufOutputStream;
import io.netty.buffer.Unpooled;
import io.netty.handler.codec.http.DefaultFullHttpResponse;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.HttpVersion;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /metrics on the serving port: the container's per-model series in Prometheus text format (see
 * ContainerMetrics, MetricsText). Answers 503 until the per-connection handler is in place, and `serve`
 * waits for the 200, so no client connection goes unseen. Also starts the opt-in EMF writer, and warms
 * the render path up so the first scrapes are not run by Java's interpreter.
 */
@Endpoint(
        urlPattern = "metrics",
        endpointType = EndpointTypes.MANAGEMENT,
        description = "per-model metrics, Prometheus text format")
public class MetricsEndpoint extends ModelServerEndpoint {

    private static final Logger logger = LoggerFactory.getLogger(MetricsEndpoint.class);
    private static final AtomicBoolean STARTED = new AtomicBoolean();
    /** The bench's control arm (bench/metrics_overhead.py): no per-connection handler at all. */
    static final boolean HANDLER_OFF = "off".equals(System.getenv("_MME_METRICS_HANDLER"));
    /** Renders of a synthetic model set at start: enough for C1 to compile the render path. */
    private static final int WARMUP_RENDERS = 300;
    private static volatile boolean warm;

    public MetricsEndpoint() {
        if (STARTED.compareAndSet(false, true)) {
            if (!HANDLER_OFF) {
                ChannelHook.start();
            }
            EmfWriter.startIfConfigured();
            HeapTrim.start();
            Thread t = new Thread(MetricsEndpoint::warmUp, "mme-metrics-warmup");
            t.setDaemon(true);
            t.start();
        }
    }

    /** Whether every new connection is seen and the render path is warm (/ping waits for it too). */
    static boolean ready() {
        return warm && (HANDLER_OFF || ChannelHook.installed());
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        if (!ready()) {
            rsp.setStatus(503, "Service Unavailable");
            rsp.setContentType("text/plain; charset=utf-8");
            rsp.getOutputStream().write("metrics are not installed yet\n".getBytes(StandardCharsets.UTF_8));
            return;
        }
        rsp.setContentType("text/plain; version=0.0.4; charset=utf-8");
        synchronized (MetricsText.class) {
            ScrapeText text = MetricsText.render(ContainerMetrics.byLabel(), MetricsText.registered());
            Body.put(rsp, text.array(), text.length());
        }
        HeapTrim.scraped();
    }

    /**
     * Renders a synthetic set of models (never the real counters) until the JIT compiled the render
     * path: the first scrapes after start took 106-166 ms with 1,000 models, interpreted. GET /metrics
     * answers 503 until this is done (a fraction of a second), and `serve` waits for its 200.
     */
    private static void warmUp() {
        try {
            java.util.Map<String, java.util.List<ModelStats>> groups = new java.util.LinkedHashMap<>();
            for (int i = 0; i < 50; i++) {
                ModelStats s = new ModelStats("warmup-" + i);
                s.target = "warmup/\"" + i + "\"\u00e9.tar.gz"; // escapes and UTF-8 too
                for (int k = 0; k < ModelStats.BOUNDS.length + 1; k++) {
                    s.invoked(k % 3 == 0 ? 400 : 200, k < ModelStats.BOUNDS.length ? ModelStats.BOUNDS[k] : 99);
                }
                s.loadAnswered(200, 0.02, false);
                s.loadAnswered(400, 0.01, false);
                s.loadAnswered(400, 0.01, true);
                s.unloads.increment();
                groups.put(s.label(), java.util.List.of(s));
            }
            for (int i = 0; i < WARMUP_RENDERS; i++) {
                synchronized (MetricsText.class) {
                    ScrapeText text = MetricsText.render(groups, java.util.Set.of());
                    if (i % 10 == 0) { // the answer's path and the ledger's /proc listing, less often
                        Body.warmUp(text);
                        MetricsText.LEDGER.liveProcesses();
                    } else {
                        Body.sink(text.array(), text.length());
                    }
                }
            }
        } catch (RuntimeException e) {
            logger.warn("metrics warm-up failed: {}", e.toString());
        }
        warm = true;
        HeapTrim.note(); // the start's garbage goes back too, once things are quiet
    }

    /** Puts the scrape's text into MMS's answer. */
    static final class Body {
        private static final Field RESPONSE = field("com.amazonaws.ml.mms.servingsdk.impl.ModelServerResponse",
                "response");
        private static final Field CONTENT = field("io.netty.handler.codec.http.DefaultFullHttpResponse",
                "content");
        private static volatile int checksum;

        private Body() {}

        private static Field field(String cls, String name) {
            try {
                Field f = Class.forName(cls).getDeclaredField(name);
                f.setAccessible(true);
                return f;
            } catch (ReflectiveOperationException | RuntimeException e) {
                return null;
            }
        }

        /**
         * MMS gives the endpoint a heap buffer that grows by doubling: 1-2.5 MB of text cost ~2x that in
         * short-lived arrays on the Java front's small heap, and young collections mid-scrape. The text is
         * copied instead into one direct (off-heap) buffer of its exact size, which Netty frees once
         * written; where MMS's objects are not as expected, into the heap buffer, grown once.
         */
        static void put(Response rsp, byte[] bytes, int len) throws IOException {
            OutputStream os = rsp.getOutputStream();
            if (RESPONSE != null && CONTENT != null) {
                try {
                    Object full = RESPONSE.get(rsp);
                    if (full instanceof DefaultFullHttpResponse) {
                        ByteBuf old = ((DefaultFullHttpResponse) full).content();
                        if (old.readableBytes() == 0) {
                            ByteBuf direct = Unpooled.directBuffer(len, len);
                            direct.writeBytes(bytes, 0, len);
                            CONTENT.set(full, direct);
                            old.release();
                            return;
                        }
                    }
                } catch (IllegalAccessException | RuntimeException e) {
                    // fall back to MMS's own buffer below
                }
            }
            if (os instanceof ByteBufOutputStream) {
                ((ByteBufOutputStream) os).buffer().ensureWritable(len);
            }
            os.write(bytes, 0, len);
        }

        /** Puts the text into a response as a scrape does, then drops it. */
        static void warmUp(ScrapeText text) {
            DefaultFullHttpResponse full = new DefaultFullHttpResponse(
                    HttpVersion.HTTP_1_1, HttpResponseStatus.OK, Unpooled.buffer(0));
            try {
                put(new ModelServerResponse(full), text.array(), text.length());
            } catch (IOException e) {
                throw new java.io.UncheckedIOException(e);
            } finally {
                full.release();
            }
        }

        /** The warm-up's answer: read, so the JIT cannot drop the rendering as unused. */
        static void sink(byte[] bytes, int len) {
            checksum += bytes[len - 1] + len;
        }
    }
}

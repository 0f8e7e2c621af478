package com.mme.mms;

import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpResponse;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponse;
import java.util.ArrayDeque;

/**
 * One per connection, after MMS's HTTP aggregator: notes each request as it arrives and, when its
 * answer is written, hands status and latency to ContainerMetrics. HTTP/1.1 answers leave in request
 * order, so a queue pairs them. Netty calls both methods on the connection's event loop: no locks.
 * Also adds what the memory ledger says of a model to MMS's answer to GET /models/{name} (ModelDescription).
 */
final class InvokeMetricsHandler extends ChannelDuplexHandler {

    private final ArrayDeque<ContainerMetrics.Pending> pending = new ArrayDeque<>();

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) throws Exception {
        if (msg instanceof HttpRequest) {
            pending.add(ContainerMetrics.begin((HttpRequest) msg));
        }
        ctx.fireChannelRead(msg);
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) throws Exception {
        if (msg instanceof HttpResponse) {
            int code = ((HttpResponse) msg).status().code();
            if (code >= 200) { // not an interim 100 Continue
                ContainerMetrics.Pending p = pending.poll();
                if (p != null) {
                    boolean skew = false;
                    if (msg instanceof FullHttpResponse) {
                        FullHttpResponse full = (FullHttpResponse) msg;
                        if (p.kind == ContainerMetrics.Kind.DESCRIBE && code == 200 && p.name != null) {
                            msg = ModelDescription.describe(full, p.name);
                        } else if (p.kind == ContainerMetrics.Kind.LOAD && code == 400) {
                            skew = VersionSkewAnswers.refused(full);
                        }
                    }
                    ContainerMetrics.end(p, code, skew);
                    if (JavaStages.ON && p.kind == ContainerMetrics.Kind.INVOKE) {
                        JavaStages.line('H', p.startNanos, System.nanoTime());
                    }
                }
            }
        }
        ctx.write(msg, promise);
    }
}

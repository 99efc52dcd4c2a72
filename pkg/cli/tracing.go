package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// The OpenTelemetry variables that turn tracing on and shape it. The
// exporter reads the rest of the OTEL_EXPORTER_OTLP_* variables (headers,
// certificates, timeout, compression) and the batch processor the
// OTEL_BSP_* ones from the process's environment itself.
const (
	envSDKDisabled       = "OTEL_SDK_DISABLED"
	envTracesExporter    = "OTEL_TRACES_EXPORTER"
	envOTLPEndpoint      = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPTraceEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envOTLPProtocol      = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTraceProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envServiceName       = "OTEL_SERVICE_NAME"
	envResource          = "OTEL_RESOURCE_ATTRIBUTES"
	envSampler           = "OTEL_TRACES_SAMPLER"
	envSamplerArg        = "OTEL_TRACES_SAMPLER_ARG"
)

// defaultOTLPEndpoint is OTLP/HTTP's default, as the OpenTelemetry
// specification gives it.
const defaultOTLPEndpoint = "http://localhost:4318/v1/traces"

// tracingShutdownTimeout bounds the export of the last spans at stop.
const tracingShutdownTimeout = 5 * time.Second

// tracerFromEnv builds the tracer provider of a service from the standard
// OpenTelemetry environment. Tracing is off (a nil provider, which the
// components take as "start no span") unless OTEL_TRACES_EXPORTER names an
// exporter (otlp, console) or an OTLP endpoint is set; OTEL_SDK_DISABLED=true
// and OTEL_TRACES_EXPORTER=none turn it off. stop flushes the spans not yet
// exported; call it when the service has stopped.
func tracerFromEnv(ctx context.Context, env Env, service string, log *slog.Logger) (tp trace.TracerProvider, stop func(), err error) {
	get := func(k string) string { return strings.TrimSpace(env.Getenv(k)) }
	stop = func() {}
	if strings.EqualFold(get(envSDKDisabled), "true") {
		return nil, stop, nil
	}
	endpoint := get(envOTLPTraceEndpoint)
	if endpoint == "" {
		if base := get(envOTLPEndpoint); base != "" {
			endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
		}
	}
	names := get(envTracesExporter)
	if names == "" {
		if endpoint == "" {
			return nil, stop, nil // the default: off
		}
		names = "otlp"
	}
	var opts []sdktrace.TracerProviderOption
	var what []string
	for name := range strings.SplitSeq(names, ",") {
		switch name = strings.TrimSpace(name); name {
		case "none":
			if names != "none" {
				return nil, stop, fmt.Errorf("%s=%q: none goes alone", envTracesExporter, names)
			}
			return nil, stop, nil
		case "otlp":
			exp, desc, err := otlpExporter(ctx, get, endpoint)
			if err != nil {
				return nil, stop, err
			}
			opts = append(opts, sdktrace.WithBatcher(exp))
			what = append(what, desc)
		case "console":
			exp, err := stdouttrace.New(stdouttrace.WithWriter(consoleWriter(env)))
			if err != nil {
				return nil, stop, fmt.Errorf("%s: console: %w", envTracesExporter, err)
			}
			opts = append(opts, sdktrace.WithSyncer(exp))
			what = append(what, "console (stderr)")
		default:
			return nil, stop, fmt.Errorf("%s=%q: %q is not an exporter eventlog has: otlp, console or none", envTracesExporter, names, name)
		}
	}
	sampler, samplerDesc, err := samplerFromEnv(get)
	if err != nil {
		return nil, stop, err
	}
	attrs, err := resourceAttributes(get(envResource))
	if err != nil {
		return nil, stop, err
	}
	name := service
	if v := get(envServiceName); v != "" {
		name = v
	}
	attrs = append(attrs, attribute.String("service.name", name))
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, stop, fmt.Errorf("tracing: resource: %w", err)
	}
	p := sdktrace.NewTracerProvider(append(opts, sdktrace.WithSampler(sampler), sdktrace.WithResource(res))...)
	log.Info("tracing on", "exporter", strings.Join(what, ", "), "sampler", samplerDesc, "service", name)
	return p, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingShutdownTimeout)
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			log.Warn("tracing: spans not exported at stop", "error", err)
		}
	}, nil
}

// consoleWriter is where the console exporter writes: the command's
// standard error, beside its logs.
func consoleWriter(env Env) io.Writer {
	if env.Stderr != nil {
		return env.Stderr
	}
	return io.Discard
}

// otlpExporter returns the OTLP/HTTP exporter to endpoint (the default
// endpoint if empty) and what it is, for the log.
func otlpExporter(ctx context.Context, get func(string) string, endpoint string) (sdktrace.SpanExporter, string, error) {
	protocol := get(envOTLPTraceProtocol)
	if protocol == "" {
		protocol = get(envOTLPProtocol)
	}
	if protocol != "" && protocol != "http/protobuf" {
		return nil, "", fmt.Errorf("%s=%q: eventlog exports OTLP over http/protobuf only (the collector's port 4318); set it to http/protobuf", envOTLPProtocol, protocol)
	}
	if endpoint == "" {
		endpoint = defaultOTLPEndpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("%s / %s: %q is not an http:// or https:// URL with a host", envOTLPEndpoint, envOTLPTraceEndpoint, endpoint)
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, "", fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, "otlp " + endpoint, nil
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and its argument, as the
// OpenTelemetry specification names them; the default is parentbased_always_on.
func samplerFromEnv(get func(string) string) (sdktrace.Sampler, string, error) {
	name, arg := get(envSampler), get(envSamplerArg)
	if name == "" {
		name = "parentbased_always_on"
	}
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("%s=%q: want a ratio from 0 to 1 for %s", envSamplerArg, arg, name)
		}
		return r, nil
	}
	var s sdktrace.Sampler
	switch name {
	case "always_on":
		s = sdktrace.AlwaysSample()
	case "always_off":
		s = sdktrace.NeverSample()
	case "traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, "", err
		}
		s = sdktrace.TraceIDRatioBased(r)
	case "parentbased_always_on":
		s = sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		s = sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, "", err
		}
		s = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r))
	default:
		return nil, "", fmt.Errorf("%s=%q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", envSampler, name)
	}
	return s, s.Description(), nil
}

// resourceAttributes parses OTEL_RESOURCE_ATTRIBUTES: key=value pairs,
// comma-separated, each part percent-encoded.
func resourceAttributes(v string) ([]attribute.KeyValue, error) {
	var out []attribute.KeyValue
	if v == "" {
		return out, nil
	}
	for pair := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(pair, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || k == "" {
			return nil, fmt.Errorf("%s: %q is not key=value", envResource, pair)
		}
		dk, err1 := url.PathUnescape(k)
		dv, err2 := url.PathUnescape(val)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: %q is not percent-encoded correctly", envResource, pair)
		}
		out = append(out, attribute.String(dk, dv))
	}
	return out, nil
}

// startTracing is what a service command does after its logger: the
// tracer provider of the OTEL_* environment, service.name
// "<program>-<command>" unless OTEL_SERVICE_NAME says otherwise.
func (p Program) startTracing(ctx context.Context, cmd string, env Env, log *slog.Logger) (trace.TracerProvider, func(), error) {
	tp, stop, err := tracerFromEnv(ctx, env, strings.ReplaceAll(p.name(cmd), " ", "-"), log)
	if err != nil {
		return nil, nil, UsageError{err}
	}
	return tp, stop, nil
}

/* mysql_proxy: the MySQL/MariaDB wire protocol decoder. Pure: no I/O, no
 * core; fed the bytes of each direction as they come (any split), it frames
 * packets (3-byte length, 1-byte sequence; a 0xffffff length continues the
 * payload in the next packet), follows the session phases (greeting, login,
 * auth switch / more data, command phase) and reports events. Memory is
 * bounded: at most MYSQL_CAP_CLIENT / MYSQL_CAP_SERVER bytes of each logical
 * payload are kept, whatever a length field claims. After an SSL request it
 * stops decoding. */
#ifndef HERALD_PLUGIN_MYSQL_CODEC_H
#define HERALD_PLUGIN_MYSQL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MYSQL_CAP_CLIENT (64u * 1024u) /* query text kept for parsing */
#define MYSQL_CAP_SERVER 1024u          /* greetings and auth packets are small */

#define MYSQL_CLIENT_CONNECT_WITH_DB 0x00000008u
#define MYSQL_CLIENT_COMPRESS 0x00000020u
#define MYSQL_CLIENT_PROTOCOL_41 0x00000200u
#define MYSQL_CLIENT_SSL 0x00000800u
#define MYSQL_CLIENT_PLUGIN_AUTH_LENENC 0x00200000u
#define MYSQL_CLIENT_SECURE_CONNECTION 0x00008000u
#define MYSQL_CLIENT_QUERY_ATTRIBUTES 0x08000000u

#define MYSQL_COM_QUIT 0x01
#define MYSQL_COM_INIT_DB 0x02
#define MYSQL_COM_QUERY 0x03
#define MYSQL_COM_CHANGE_USER 0x11
#define MYSQL_COM_STMT_PREPARE 0x16
#define MYSQL_COM_STMT_SEND_LONG_DATA 0x18
#define MYSQL_COM_STMT_CLOSE 0x19

enum mysql_phase {
    MYSQL_PH_INIT = 0,      /* waiting for the server greeting */
    MYSQL_PH_LOGIN,         /* greeting seen: waiting for the handshake response */
    MYSQL_PH_AUTH,          /* response sent: OK / ERR / auth switch / more data */
    MYSQL_PH_COMMAND,       /* logged in */
    MYSQL_PH_SSL,           /* the client asked for TLS: nothing more is decoded */
    MYSQL_PH_FAILED,        /* login refused: the server closes */
    MYSQL_PH_OPAQUE,        /* compression negotiated: framing we do not follow */
};

enum mysql_event {
    MYSQL_EV_GREETING = 0,  /* server: handshake v10 (version in .text) */
    MYSQL_EV_LOGIN,         /* client: handshake response (user in .text, db in .db) */
    MYSQL_EV_SSL_REQUEST,   /* client: SSL request; decoding stops */
    MYSQL_EV_AUTH_SWITCH,   /* server: auth switch request (plugin in .text) */
    MYSQL_EV_AUTH_MORE,     /* server: auth more data */
    MYSQL_EV_LOGIN_OK,      /* server: OK ending the login */
    MYSQL_EV_LOGIN_FAIL,    /* server: ERR ending the login (.code) */
    MYSQL_EV_COMMAND,       /* client: a command (.cmd); COM_QUERY/INIT_DB/STMT_PREPARE text in .text */
    MYSQL_EV_RESULT,        /* server: first reply to the last command (.cmd); .code: ERR's code or 0 */
    MYSQL_EV_DECODER_ERROR, /* a packet that does not decode (.text: why) */
    MYSQL_EV_PROTOCOL_ERROR,/* a packet out of sequence (.text: why) */
};

struct mysql_ev {
    enum mysql_event type;
    uint8_t cmd;            /* COMMAND */
    uint8_t seq;
    uint16_t code;          /* LOGIN_FAIL, RESULT: the error code */
    const char *text;       /* see above; NUL-terminated; may be truncated */
    size_t text_len;
    bool truncated;         /* the payload was longer than what is kept */
    const char *db;         /* LOGIN: database or NULL */
    uint64_t payload_len;   /* the whole logical payload */
};

typedef void (*mysql_ev_fn)(void *arg, const struct mysql_ev *ev);

/* One direction's framing. */
struct mysql_dir {
    uint8_t hdr[4];
    unsigned hdr_have;
    uint32_t left;          /* payload bytes still to come in this packet */
    bool more;              /* this packet is 0xffffff long: the payload continues */
    bool in_msg;            /* inside a logical payload */
    uint8_t seq;            /* sequence of the payload's first packet */
    uint8_t last_seq;
    uint64_t total;         /* logical payload length so far */
    size_t cap, have;
    uint8_t *buf;           /* cap + 1 bytes (NUL) */
};

struct mysql_codec {
    enum mysql_phase phase;
    struct mysql_dir c2s, s2c;
    uint32_t server_caps, client_caps;
    uint8_t last_auth_seq;  /* sequence of the last auth packet, either side */
    bool await_reply;       /* a command was sent that the server answers */
    uint8_t reply_cmd;
    mysql_ev_fn cb;
    void *arg;
    uint64_t packets;
};

/* 0, or -1 when out of memory. */
int mysql_codec_init(struct mysql_codec *c, mysql_ev_fn cb, void *arg);
void mysql_codec_fini(struct mysql_codec *c);
/* Bytes from the client (to the server) and from the server. */
void mysql_codec_client(struct mysql_codec *c, const uint8_t *data, size_t len);
void mysql_codec_server(struct mysql_codec *c, const uint8_t *data, size_t len);
const char *mysql_phase_name(enum mysql_phase p);

#endif

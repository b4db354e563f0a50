// An OpenIGTLink peer built on the reference C++ library (libopenigtlink-dev), for the messages
// pyigtl does not have: it plays a tracker that sends TDATA, and a Slicer that receives STATUS.
// Compiled by tests/python/test_igtl_bridge.py with g++; prints what it sent or received as JSON
// lines on stdout, one per message.
//
//   igtl_peer tdata-server PORT SECONDS   serve TDATA frames at 50 Hz to the first client
//   igtl_peer receive-server PORT SECONDS serve one client, print every STATUS, STRING and TRANSFORM
//                                         (checked between messages: the caller ends it)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "igtlClientSocket.h"
#include "igtlOSUtil.h"
#include "igtlServerSocket.h"
#include "igtlStatusMessage.h"
#include "igtlStringMessage.h"
#include "igtlTimeStamp.h"
#include "igtlTrackingDataMessage.h"
#include "igtlTransformMessage.h"

static igtl::ClientSocket::Pointer accept_one(int port) {
  igtl::ServerSocket::Pointer server = igtl::ServerSocket::New();
  if (server->CreateServer(port) < 0) {
    std::fprintf(stderr, "cannot listen on %d\n", port);
    std::exit(2);
  }
  std::printf("{\"listening\": %d}\n", port);
  std::fflush(stdout);
  for (int i = 0; i < 300; ++i) {
    igtl::ClientSocket::Pointer s = server->WaitForConnection(100);
    if (s.IsNotNull()) return s;
  }
  std::fprintf(stderr, "nobody connected\n");
  std::exit(3);
}

static double now_s() {
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// Two tools per frame, each frame stamped 0.25 s before it is sent (the tracker's own time, so
// that a bridge using its arrival time instead would be caught).
static int tdata_server(int port, double seconds) {
  igtl::ClientSocket::Pointer sock = accept_one(port);
  double end = now_s() + seconds;
  for (int k = 0; now_s() < end; ++k) {
    igtl::TrackingDataMessage::Pointer msg = igtl::TrackingDataMessage::New();
    msg->SetDeviceName("Tracker");
    const char* names[2] = {"Marker1ToTracker", "Marker2ToTracker"};
    float pos[2][3] = {{10.5f, -20.25f, 30.0f + k}, {-40.5f, 50.25f, 60.0f}};
    for (int e = 0; e < 2; ++e) {
      igtl::TrackingDataElement::Pointer el = igtl::TrackingDataElement::New();
      el->SetName(names[e]);
      el->SetType(igtl::TrackingDataElement::TYPE_6D);
      igtl::Matrix4x4 m;
      igtl::IdentityMatrix(m);
      // A rotation as well, so that reading the translation from the wrong floats shows.
      m[0][0] = 0.0f; m[0][1] = -1.0f; m[1][0] = 1.0f; m[1][1] = 0.0f;
      m[0][3] = pos[e][0]; m[1][3] = pos[e][1]; m[2][3] = pos[e][2];
      el->SetMatrix(m);
      msg->AddTrackingDataElement(el);
    }
    igtl::TimeStamp::Pointer ts = igtl::TimeStamp::New();
    double stamp = now_s() - 0.25;
    ts->SetTime(stamp);
    msg->SetTimeStamp(ts);
    msg->Pack();
    if (sock->Send(msg->GetPackPointer(), msg->GetPackSize()) == 0) break;
    igtlUint32 sec, nsec;
    ts->GetTimeStamp(&sec, &nsec);
    std::printf("{\"sent\": \"TDATA\", \"sec\": %u, \"nsec\": %u, \"z1\": %.3f}\n", sec, nsec, pos[0][2]);
    std::fflush(stdout);
    igtl::Sleep(20);
  }
  return 0;
}

static void print_json_string(const char* s) {
  std::putchar('"');
  for (const char* p = s; *p; ++p) {
    if (*p == '"' || *p == '\\') std::putchar('\\');
    if ((unsigned char)*p >= 0x20) std::putchar(*p);
  }
  std::putchar('"');
}

static int receive_server(int port, double seconds) {
  // Blocking reads: the test ends this process when it has seen what it needs.
  igtl::ClientSocket::Pointer sock = accept_one(port);
  double end = now_s() + seconds;
  while (now_s() < end) {
    igtl::MessageHeader::Pointer header = igtl::MessageHeader::New();
    header->InitPack();
    int r = sock->Receive(header->GetPackPointer(), header->GetPackSize());
    if (r != header->GetPackSize()) break;  // closed
    header->Unpack();
    std::string type = header->GetDeviceType();
    igtl::MessageBase::Pointer body;
    igtl::StatusMessage::Pointer status;
    igtl::StringMessage::Pointer text;
    igtl::TransformMessage::Pointer transform;
    if (type == "STATUS") body = status = igtl::StatusMessage::New();
    else if (type == "STRING") body = text = igtl::StringMessage::New();
    else if (type == "TRANSFORM") body = transform = igtl::TransformMessage::New();
    if (body.IsNull()) {
      sock->Skip(header->GetBodySizeToRead(), 0);
      continue;
    }
    body->SetMessageHeader(header);
    body->AllocatePack();
    sock->Receive(body->GetPackBodyPointer(), body->GetPackBodySize());
    int c = body->Unpack(1);  // with the CRC check
    bool crc_ok = (c & igtl::MessageHeader::UNPACK_BODY) != 0;
    std::printf("{\"type\": \"%s\", \"device\": ", type.c_str());
    print_json_string(header->GetDeviceName());
    std::printf(", \"crc_ok\": %s", crc_ok ? "true" : "false");
    if (status.IsNotNull()) {
      std::printf(", \"code\": %d, \"subcode\": %lld, \"error_name\": ", status->GetCode(),
                  (long long)status->GetSubCode());
      print_json_string(status->GetErrorName());
      std::printf(", \"status_string\": ");
      print_json_string(status->GetStatusString());
    } else if (text.IsNotNull()) {
      std::printf(", \"string\": ");
      print_json_string(text->GetString());
    } else if (transform.IsNotNull()) {
      igtl::Matrix4x4 m;
      transform->GetMatrix(m);
      std::printf(", \"matrix\": [");
      for (int i = 0; i < 4; ++i)
        std::printf("%s[%.6g, %.6g, %.6g, %.6g]", i ? ", " : "", m[i][0], m[i][1], m[i][2], m[i][3]);
      std::printf("]");
    }
    std::printf("}\n");
    std::fflush(stdout);
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s tdata-server|receive-server PORT SECONDS\n", argv[0]);
    return 1;
  }
  int port = std::atoi(argv[2]);
  double seconds = std::atof(argv[3]);
  if (std::strcmp(argv[1], "tdata-server") == 0) return tdata_server(port, seconds);
  if (std::strcmp(argv[1], "receive-server") == 0) return receive_server(port, seconds);
  return 1;
}

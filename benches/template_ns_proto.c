// Prototype measurement for the sandbox's next design step (see docs/sandbox-bench.md, "A mount
// template"): is it cheaper to give each task a copy of a prepared mount namespace than to build
// its tree mount by mount? Not used by grit; it prints per-task numbers only.
//
// What it does, as a zygote would:
// - unshare a user namespace Q (own uid/gid mapped) and a mount namespace H (host view);
// - unshare a second mount namespace P, the template: a tmpfs root with read-only system binds,
//   six device nodes and a bind of the host's procfs (the kernel allows a fresh proc mount only
//   where a proc mount is already fully visible), then pivot_root into it;
// - per task: setns(H), open_tree(OPEN_TREE_CLONE) of the task's directories, setns(P), clone3
//   with new user (child of Q), mount, pid, ipc and uts namespaces; the child mounts its proc,
//   writes its uid/gid maps, move_mounts the detached trees in, mounts a private /tmp, reports
//   back and exits; the parent waits for it.
//
// usage: template_ns_proto [N] [PER_TASK_USERNS]   (defaults 300, 1). Needs /tmp/tpl-out.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

#define CHK(x) do { if ((x) < 0) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, strerror(errno)); exit(1);} } while (0)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void wr(const char*p,const char*s){int fd=open(p,O_WRONLY);CHK(fd);CHK(write(fd,s,strlen(s)));close(fd);}
static int open_tree_(int d,const char*p,unsigned f){return syscall(SYS_open_tree,d,p,f);}
static int move_mount_(int fd,const char*fp,int td,const char*tp,unsigned f){return syscall(SYS_move_mount,fd,fp,td,tp,f);}
static void bind_ro(const char*src,const char*dst){mkdir(dst,0755);CHK(mount(src,dst,NULL,MS_BIND|MS_REC,NULL));}

int main(int argc,char**argv){
  int n=argc>1?atoi(argv[1]):300; mkdir("/tmp/tpl-out",0777); int per_task_user=argc>2?atoi(argv[2]):1;
  uid_t uid=geteuid(); gid_t gid=getegid(); char m[64];
  // Zygote's own user namespace Q and host-view mount namespace H.
  CHK(unshare(CLONE_NEWUSER|CLONE_NEWNS));
  wr("/proc/self/setgroups","deny"); snprintf(m,64,"%d %d 1",uid,uid); wr("/proc/self/uid_map",m); snprintf(m,64,"%d %d 1",gid,gid); wr("/proc/self/gid_map",m);
  int host=open("/proc/self/ns/mnt",O_RDONLY); CHK(host);
  // Template namespace P: tmpfs root with the static part, pivoted.
  CHK(unshare(CLONE_NEWNS));
  int tpl=open("/proc/self/ns/mnt",O_RDONLY); CHK(tpl);
  int hostproc=open_tree_(AT_FDCWD,"/proc",OPEN_TREE_CLONE|AT_RECURSIVE); CHK(hostproc);
  CHK(mount("tmpfs","/proc",  "tmpfs",MS_NOSUID|MS_NODEV,"mode=0755,size=1m")); // staging over /proc, as grit does
  bind_ro("/usr","/proc/usr"); bind_ro("/etc","/proc/etc"); bind_ro("/opt","/proc/opt");
  symlink("usr/bin","/proc/bin"); symlink("usr/lib","/proc/lib"); symlink("usr/lib64","/proc/lib64");
  mkdir("/proc/dev",0755);
  const char*devs[]={"null","zero","full","random","urandom","tty"};
  for(int i=0;i<6;i++){char s[64],d[64];snprintf(s,64,"/dev/%s",devs[i]);snprintf(d,64,"/proc/dev/%s",devs[i]);close(open(d,O_CREAT|O_RDONLY,0444));CHK(mount(s,d,NULL,MS_BIND,NULL));}
  mkdir("/proc/proc",0755); CHK(move_mount_(hostproc,"",AT_FDCWD,"/proc/proc",MOVE_MOUNT_F_EMPTY_PATH)); mkdir("/proc/tmp",0755); mkdir("/proc/work",0755); mkdir("/proc/work/out",0755); mkdir("/proc/work/in",0755);
  CHK(chdir("/proc")); CHK(syscall(SYS_pivot_root,".",".")); CHK(umount2(".",MNT_DETACH)); CHK(chdir("/"));
  // Task data on the host.

  double total=0, setup=0;
  for(int i=0;i<n;i++){
    double t0=now();
    CHK(setns(host,CLONE_NEWNS));
    int out=open_tree_(AT_FDCWD,"/tmp/tpl-out",OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC); CHK(out);
    int in=open_tree_(AT_FDCWD,"/usr/share",OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC); CHK(in);
    CHK(setns(tpl,CLONE_NEWNS));
    struct clone_args a; memset(&a,0,sizeof a);
    a.flags=CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|CLONE_NEWUTS|(per_task_user?CLONE_NEWUSER:0); a.exit_signal=SIGCHLD;
    int pfd[2]; pipe(pfd);
    long pid=syscall(SYS_clone3,&a,sizeof a); CHK(pid);
    if(pid==0){
      if(mount("proc","/proc","proc",MS_NOSUID|MS_NODEV|MS_NOEXEC,NULL)<0){fprintf(stderr,"proc: %s\n",strerror(errno));_exit(5);}
      if(per_task_user){ wr("/proc/self/setgroups","deny"); char mm[64]; snprintf(mm,64,"%d %d 1",uid,uid); wr("/proc/self/uid_map",mm); snprintf(mm,64,"%d %d 1",gid,gid); wr("/proc/self/gid_map",mm);} 
      if(move_mount_(out,"",AT_FDCWD,"/work/out",MOVE_MOUNT_F_EMPTY_PATH)<0){fprintf(stderr,"move_mount out: %s\n",strerror(errno));_exit(2);}
      if(move_mount_(in,"",AT_FDCWD,"/work/in",MOVE_MOUNT_F_EMPTY_PATH)<0){fprintf(stderr,"move_mount in: %s\n",strerror(errno));_exit(3);}
      if(mount("tmpfs","/tmp","tmpfs",MS_NOSUID|MS_NODEV,"mode=1777")<0){fprintf(stderr,"tmp: %s\n",strerror(errno));_exit(4);}
      struct stat st; if(stat("/work/in/doc",&st)<0){fprintf(stderr,"stat in: %s\n",strerror(errno));_exit(6);}
      if(i==0){ char b[4096]; int f=open("/proc/self/mountinfo",O_RDONLY); int k=read(f,b,sizeof b-1); b[k>0?k:0]=0; fprintf(stderr,"%s", b);} 
      char x='x'; write(pfd[1],&x,1);
      _exit(0);
    }
    close(pfd[1]); char x; read(pfd[0],&x,1); double t1=now();
    close(pfd[0]);close(out);close(in);
    int st; waitpid(pid,&st,0); double t2=now();
    if(!WIFEXITED(st)||WEXITSTATUS(st)){fprintf(stderr,"child failed %d\n",st);return 1;}
    setup+=t1-t0; total+=t2-t0;
  }
  printf("per task: setup %.0f us, setup+exit+wait %.0f us (per-task user ns: %d)\n",setup/n,total/n,per_task_user);
  return 0;
}
